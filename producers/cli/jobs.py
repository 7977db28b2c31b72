"""`lmq chat`, `lmq complete`, `lmq embed`: submit one job and (by default) wait for it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from producers.cli import main
from producers.cli._context import cli_settings, echo_json
from producers.cli._render import result_text, stats_line
from producers.job_building import make_config
from producers.job_handle import JobHandle
from producers.job_queue import JobQueue
from workers.celery_config import PRIORITIES
from workers.contract import PredictionConfig


def _json_schema(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None


def prediction_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Sampling options; together they fill one PredictionConfig."""
    options = [
        click.option("--temperature", type=float, default=None),
        click.option("--max-tokens", type=int, default=None),
        click.option("--top-p", type=float, default=None),
        click.option("--top-k", type=int, default=None),
        click.option("--stop", multiple=True, help="A stop string (repeatable)."),
        click.option("--seed", type=int, default=None),
        click.option("--json-schema", callback=_json_schema, default=None,
                     help="Structured output: a JSON Schema (as a JSON string)."),
        click.option("--config", "sdk_config", callback=_json_object, default=None,
                     help="The SDK's prediction config as a JSON object (any "
                     "LlmPredictionConfig key, e.g. '{\"repeatPenalty\": 1.1}'); the options "
                     "above override its keys."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def wait_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--wait/--no-wait", default=True,
                     help="Wait for the result (default) or print the job id."),
        click.option("--stream", is_flag=True, help="Print the text as it is generated."),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
        click.option("--timeout", "timeout_s", type=float, default=None,
                     help="Give up waiting after this many seconds."),
        click.option("--enqueue-anyway", is_flag=True,
                     help="Queue the job even if no live worker serves the model."),
        click.option("--priority", type=click.Choice(PRIORITIES), default="normal",
                     show_default=True, help="Workers take the most urgent waiting job first."),
        click.option("--expires", "--expires-s", "expires_s",
                     type=click.FloatRange(min=0, min_open=True),
                     default=None, help="Never start the job later than this many seconds "
                     "after submission (it then fails with JobExpiredError)."),
        click.option("--time-limit", "--time-limit-s", "time_limit_s",
                     type=click.FloatRange(min=0, min_open=True),
                     default=None, help="Cancel the job this many seconds after it started "
                     "(REVOKED, its partial result kept)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    parsed = _json_schema(ctx, param, value)
    if parsed is not None and not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"maxTokens\": 64}'")
    return parsed


def to_config(opts: dict[str, Any]) -> PredictionConfig:
    fields = {name: opts.pop(name) for name in ("temperature", "max_tokens", "top_p", "top_k",
                                                "seed", "json_schema")}
    fields["stop"] = list(opts.pop("stop"))
    options = make_config({key: value for key, value in fields.items()
                           if value not in (None, [])})
    base = make_config(opts.pop("sdk_config"))  # both in the SDK's keys now: options win
    return make_config({**base.model_dump(exclude_none=True),
                        **options.model_dump(exclude_none=True)})


def _prints_text(wait: bool, stream: bool, as_json: bool) -> bool:
    """`finish` prints the text as it comes (the job is sent as streamed)."""
    return wait and stream and not as_json


def finish(handle: JobHandle, *, wait: bool, stream: bool, as_json: bool,
           timeout_s: float | None) -> None:
    """Print what the user asked for: the id, the streamed text, the result."""
    if not wait:
        click.echo(json.dumps({"job_id": handle.id}) if as_json else handle.id)
        return
    if stream and not as_json:
        def restarted() -> None:
            click.echo("\n[the connection to LM Studio dropped; the text restarts]")

        for text in handle.stream(timeout=timeout_s, on_reset=restarted):
            sys.stdout.write(text)
            sys.stdout.flush()
        click.echo()
    result = handle.result(timeout=timeout_s)
    if as_json:
        echo_json(result.model_dump(mode="json"))
        return
    if not stream:
        click.echo(result_text(result))
    click.echo(stats_line(result))


@main.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--system", "system_prompt", default=None, help="System prompt.")
@prediction_options
@wait_options
def chat(model: str, prompt: str, system_prompt: str | None, wait: bool, stream: bool,
         as_json: bool, timeout_s: float | None, enqueue_anyway: bool, priority: str,
         expires_s: float | None, time_limit_s: float | None, **opts: Any) -> None:
    """Chat with MODEL: one user message PROMPT."""
    config = to_config(opts)
    with JobQueue(cli_settings()) as queue:
        handle = queue.chat(model, prompt, system_prompt=system_prompt, config=config,
                            enqueue_anyway=enqueue_anyway, priority=priority,
                            expires_s=expires_s, time_limit_s=time_limit_s,
                            streamed=_prints_text(wait, stream, as_json))
        finish(handle, wait=wait, stream=stream, as_json=as_json, timeout_s=timeout_s)


@main.command()
@click.argument("model")
@click.argument("prompt")
@prediction_options
@wait_options
def complete(model: str, prompt: str, wait: bool, stream: bool, as_json: bool,
             timeout_s: float | None, enqueue_anyway: bool, priority: str,
             expires_s: float | None, time_limit_s: float | None, **opts: Any) -> None:
    """Complete PROMPT with MODEL (raw text completion)."""
    config = to_config(opts)
    with JobQueue(cli_settings()) as queue:
        handle = queue.complete(model, prompt, config=config, enqueue_anyway=enqueue_anyway,
                                priority=priority, expires_s=expires_s,
                                time_limit_s=time_limit_s,
                                streamed=_prints_text(wait, stream, as_json))
        finish(handle, wait=wait, stream=stream, as_json=as_json, timeout_s=timeout_s)


@main.command()
@click.argument("model")
@click.argument("texts", nargs=-1, required=True)
@wait_options
def embed(model: str, texts: tuple[str, ...], wait: bool, stream: bool, as_json: bool,
          timeout_s: float | None, enqueue_anyway: bool, priority: str,
          expires_s: float | None, time_limit_s: float | None) -> None:
    """Embed each TEXT with the embedding MODEL."""
    with JobQueue(cli_settings()) as queue:
        handle = queue.embed(model, list(texts), enqueue_anyway=enqueue_anyway,
                             priority=priority, expires_s=expires_s, time_limit_s=time_limit_s)
        finish(handle, wait=wait, stream=False, as_json=as_json, timeout_s=timeout_s)
