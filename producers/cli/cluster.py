"""`lmq models`, `lmq workers`, `lmq doctor`: what the LM Studio host and the pool look like."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click
import redis

from producers.celery_app import producer_app
from producers.cli import main
from producers.cli._context import cli_settings, echo_json
from producers.lmstudio_host import HostModel, host_models, lmstudio_answers
from producers.redis_server import redis_answers, redis_problem
from producers.served_models import models_from_queues
from producers.settings_view import mask_url
from workers.contract import model_from_queue
from workers.metrics import read_group_metrics, read_model_metrics
from workers.settings import Settings

REPLY_TIMEOUT_S = 1.0


def live_workers(settings: Settings) -> dict[str, dict[str, Any]]:
    """worker -> {"models": [...], "active": [job ids]} from control inspect."""
    if not redis_answers(settings.broker_url, timeout_s=2.0):
        raise redis.ConnectionError(f"no answer from {mask_url(settings.broker_url)}")
    app = producer_app(settings)
    try:
        inspector = app.control.inspect(timeout=REPLY_TIMEOUT_S)
        queues = inspector.active_queues() or {}
        active = inspector.active() or {}
    finally:
        app.close()
    return {worker: {"models": [m for q in worker_queues or []
                                if (m := model_from_queue(str(q.get("name", ""))))],
                     "queues": [str(q.get("name")) for q in worker_queues or []],
                     "active": [request.get("id") for request in active.get(worker) or []]}
            for worker, worker_queues in sorted(queues.items())}


def _lmstudio_models_or_fail(settings: Settings) -> list[HostModel]:
    if not lmstudio_answers(settings.lmstudio_host):
        raise click.ClickException(f"LM Studio does not answer at {settings.lmstudio_host} "
                                   "(LMQ_LMSTUDIO_HOST); is its server running?")
    return host_models(settings.lmstudio_host)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--openmanus", "openmanus_model", metavar="MODEL", default=None,
              help="Print the OpenManus config.toml [llm] section for MODEL instead.")
def models(as_json: bool, openmanus_model: str | None) -> None:
    """Models downloaded and loaded on the LM Studio host, and which workers serve them."""
    settings = cli_settings()
    found = _lmstudio_models_or_fail(settings)
    if openmanus_model is not None:
        _print_openmanus_config(openmanus_model, found, settings)
        return
    served: dict[str, list[str]] = {}
    if redis_answers(settings.broker_url):
        app = producer_app(settings)
        try:
            served = models_from_queues(
                app.control.inspect(timeout=REPLY_TIMEOUT_S).active_queues())
        finally:
            app.close()
    if as_json:
        echo_json([{**asdict(model), "served_by": served.get(model.key, [])} for model in found])
        return
    click.echo(f"{'MODEL':45} {'TYPE':10} {'LOADED':7} SERVED BY")
    for model in found:
        workers = ", ".join(served.get(model.key, [])) or "-"
        click.echo(f"{model.key:45} {model.type:10} {'yes' if model.loaded else 'no':7} {workers}")
    click.echo("\nOpenManus: `lmq models --openmanus MODEL` prints its config.toml [llm] section.")


def _print_openmanus_config(model: str, found: list[HostModel], settings: Settings) -> None:
    from producers.openmanus import config_snippet  # imports no OpenManus code

    chat_models = [m.key for m in found if m.type == "llm"]
    if model not in chat_models:
        raise click.ClickException(
            f"{model!r} is not a chat model on {settings.lmstudio_host}; "
            f"chat models there: {', '.join(chat_models) or 'none'}")
    click.echo(config_snippet(model, host=settings.lmstudio_host), nl=False)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def workers(as_json: bool) -> None:
    """Live workers, per-model job counts and per-host-group GPU budget (as in /metrics)."""
    settings = cli_settings()
    found = live_workers(settings)
    per_model = read_model_metrics(settings.store_url)
    per_group = read_group_metrics(settings.store_url)
    if as_json:
        echo_json({"workers": found, "models": per_model, "gpu": per_group})
        return
    if not found:
        click.echo("no live workers (start one: LMQ_MODEL=<model> celery -A workers worker)")
    else:
        click.echo(f"{'WORKER':40} {'MODEL':35} ACTIVE JOBS")
        for worker, info in found.items():
            jobs = ", ".join(info["active"]) or "-"
            click.echo(f"{worker:40} {','.join(info['models']) or '-':35} {jobs}")
    _echo_model_counts(per_model)
    _echo_group_figures(per_group)


def _echo_model_counts(per_model: dict[str, dict[str, Any]]) -> None:
    if not per_model:
        return
    click.echo(f"\n{'MODEL':35} {'QUEUED':>7} {'H/N/L':>11} {'TENANTS':>8} {'RUNNING':>8} "
               f"{'OK':>7} "
               f"{'FAILED':>7} {'CANCELLED':>10} {'TOK/S avg':>10}")
    for model, figures in sorted(per_model.items()):
        tps = (figures.get("tokens_per_second") or {}).get("avg")
        by_priority = figures.get("queued_by_priority") or {}
        levels = "/".join(str(by_priority.get(p, 0)) for p in ("high", "normal", "low"))
        click.echo(f"{model:35} {figures.get('queued', 0):>7} {levels:>11} "
                   f"{figures.get('tenants_waiting', 0):>8} {figures.get('running', 0):>8} "
                   f"{figures.get('succeeded', 0):>7} {figures.get('failed', 0):>7} "
                   f"{figures.get('cancelled', 0):>10} "
                   f"{'-' if tps is None else f'{tps:.1f}':>10}")


def _echo_group_figures(per_group: dict[str, dict[str, Any]]) -> None:
    if not per_group:
        return
    click.echo(f"\n{'HOST GROUP':30} {'BUDGET':>10} {'RESERVED':>10} {'FREE':>10} "
               f"{'SLOTS USED':>11} {'WAITING':>8}")
    for group, figures in sorted(per_group.items()):
        known = figures.get("host_memory_known", True)
        budget = _gib(figures["budget_bytes"]) if known else "unknown"
        free = _gib(figures["free_bytes"]) if known else "unknown"
        click.echo(f"{group:30} {budget:>10} "
                   f"{_gib(figures['reserved_bytes']):>10} {free:>10} "
                   f"{figures['slots_in_use']:>11} {figures['waiting']:>8}")
        for inst in figures.get("instances", []):
            click.echo(f"  instance {inst['identifier']}: {inst['reserved_cells']:,} of "
                       f"{inst['cells']:,} KV cells reserved, {inst['slots_in_use']} of "
                       f"{inst['parallel']} slots in use, {inst['waiting']} waiting")


def _gib(nbytes: int) -> str:
    return f"{nbytes / 1024**3:.1f}GiB"


def _verdict(ok: bool, what: str) -> bool:
    click.echo(f"{'ok  ' if ok else 'FAIL'}  {what}")
    return ok


@main.command()
def doctor() -> None:
    """Check Redis, LM Studio and the workers; exit non-zero if something is wrong."""
    settings = cli_settings()
    results = [_check_redis(settings), _check_lmstudio(settings)]
    if results[0]:
        results.append(_check_workers(settings))
    else:
        _verdict(False, "workers: cannot be asked while Redis is down")
        results.append(False)
    if not all(results):
        raise click.exceptions.Exit(1)


def _check_redis(settings: Settings) -> bool:
    ok = _redis_verdict("Redis broker", settings.broker_url, "LMQ_BROKER_URL or --broker-url")
    if settings.backend_url != settings.broker_url:
        ok &= _redis_verdict("result backend", settings.backend_url, "LMQ_RESULT_BACKEND")
    return ok


def _redis_verdict(what: str, url: str, setting: str) -> bool:
    problem = redis_problem(url)
    where = f"{what} at {mask_url(url)}"
    if problem is None:
        return _verdict(True, where)
    return _verdict(False, f"{where}: {problem} (start redis-server, or set {setting})")


def _check_lmstudio(settings: Settings) -> bool:
    host = settings.lmstudio_host
    if not lmstudio_answers(host):
        return _verdict(False, f"LM Studio at {host}: no answer to GET /lmstudio-greeting "
                        "(start its server, or set LMQ_LMSTUDIO_HOST)")
    found = host_models(host)
    loaded = [model.key for model in found if model.loaded]
    return _verdict(True, f"LM Studio at {host}: {len(found)} models downloaded, "
                    f"loaded: {', '.join(loaded) or 'none'}")


def _check_workers(settings: Settings) -> bool:
    found = live_workers(settings)
    if not found:
        return _verdict(False, "workers: none alive (start one: "
                        "LMQ_MODEL=<model> celery -A workers worker)")
    served = sorted({model for info in found.values() for model in info["models"]})
    ok = _verdict(True, f"workers: {len(found)} alive, serving {', '.join(served) or 'nothing'}")
    _note_backlog(settings, served)
    return ok


def _note_backlog(settings: Settings, served: list[str]) -> None:
    """The same queue and GPU figures as `lmq workers` and /metrics, as notes."""
    for model, figures in sorted(read_model_metrics(settings.store_url).items()):
        if figures.get("queued") and model not in served:
            click.echo(f"warn  {figures['queued']} jobs queued for {model}, "
                       "which no live worker serves")
    for group, figures in sorted(read_group_metrics(settings.store_url).items()):
        if not figures.get("host_memory_known", True):
            click.echo(f"warn  GPU group {group}: host memory unknown: set LMQ_GPU_MEMORY to "
                       f"guard model loads ({figures['slots_in_use']} slots in use, "
                       f"{figures['waiting']} waiting)")
            continue
        click.echo(f"info  GPU group {group}: {_gib(figures['free_bytes'])} free of "
                   f"{_gib(figures['budget_bytes'])}, {figures['slots_in_use']} slots in use, "
                   f"{figures['waiting']} waiting")
