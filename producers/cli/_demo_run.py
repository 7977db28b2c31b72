"""`lmq demo`: a chat, a completion and an embedding job through the pool, end to end."""

from __future__ import annotations

from contextlib import ExitStack

import click

from producers.cli._render import result_text, stats_line
from producers.demo_stack import (
    Say,
    ensure_lmstudio,
    ensure_redis,
    simulator_engine,
    start_workers,
    worker_env,
)
from producers.job_queue import JobQueue
from producers.lmstudio_host import host_models, pick_models
from workers.settings import Settings

SIM_CHAT_MODEL = "llama-3.2-1b-instruct"
SIM_EMBED_MODEL = "text-embedding-nomic-embed-text-v1.5"
REAL_CHAT_MODEL = "smollm2-135m-instruct"  # the simulator's real engine (simulator/real_models.py)
REAL_EMBED_MODEL = "multilingual-e5-small"
JOB_TIMEOUT_S = 120.0


def choose_models(settings: Settings, on_simulator: bool, chat_model: str | None,
                  embed_model: str | None, engine: str = "deterministic") -> tuple[str, str]:
    if on_simulator and engine == "real":
        return chat_model or REAL_CHAT_MODEL, embed_model or REAL_EMBED_MODEL
    if on_simulator:
        return chat_model or SIM_CHAT_MODEL, embed_model or SIM_EMBED_MODEL
    picked_chat, picked_embed = pick_models(host_models(settings.lmstudio_host))
    chat, embed = chat_model or picked_chat, embed_model or picked_embed
    if not chat or not embed:
        raise click.ClickException(
            f"LM Studio at {settings.lmstudio_host} has no "
            f"{'chat' if not chat else 'embedding'} model downloaded: download one, or pass "
            "--chat-model/--embed-model")
    return chat, embed


def run_demo(settings: Settings, chat_model: str | None, embed_model: str | None,
             say: Say, sim_engine: str = "auto") -> None:
    with ExitStack() as stack:
        settings = ensure_redis(settings, stack, say)
        engine = simulator_engine(sim_engine)
        settings, on_simulator = ensure_lmstudio(settings, stack, say, engine)
        chat, embed = choose_models(settings, on_simulator, chat_model, embed_model, engine)
        start_workers(settings, [chat, embed], worker_env(settings, on_simulator), stack, say)
        with JobQueue(settings) as queue:
            run_jobs(queue, chat, embed, say)
        used = (f"the simulator's {engine} engine" if on_simulator
                else f"LM Studio at {settings.lmstudio_host}")
        say(f"demo: done (models served by {used}); stopping what it started")


def run_jobs(queue: JobQueue, chat: str, embed: str, say: Say) -> None:
    say("jobs: submitting a chat, a completion and an embedding job")
    prompt = "The three primary colors are"
    handles = {  # label -> (handle, text printed before the result: what it continues)
        f"chat ({chat})": (queue.chat(chat, "Say hello to the queue in one short sentence.",
                                      config={"max_tokens": 48}), ""),
        f"completion ({chat})": (queue.complete(chat, prompt, config={"max_tokens": 32}),
                                 prompt),
        f"embedding ({embed})": (queue.embed(embed, ["LM Studio runs models locally.",
                                                     "Celery distributes the jobs."]), ""),
    }
    for label, (handle, continued) in handles.items():
        result = handle.result(timeout=JOB_TIMEOUT_S)
        click.echo(f"\n== {label}, job {handle.id}")
        click.echo(continued + result_text(result))
        click.echo(stats_line(result))
    click.echo()
