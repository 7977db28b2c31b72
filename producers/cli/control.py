"""`lmq status`, `lmq result`, `lmq cancel`: look at and cancel submitted jobs."""

from __future__ import annotations

import dataclasses
from typing import Any

import click
from celery import states

from producers.cancellation import CancelOutcome
from producers.cli import main
from producers.cli._context import cli_settings, echo_json
from producers.cli._render import partial_text, result_text, stats_line
from producers.job_queue import JobQueue
from workers.error import JobCancelledError, JobTimeoutError
from workers.task_display import config_summary


def _known_or_fail(queue: JobQueue, job_id: str, state: str) -> None:
    if state == states.PENDING and queue.job_record(job_id) is None:
        raise click.ClickException(f"unknown job id {job_id!r} (never submitted, or expired)")


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(job_id: str, as_json: bool) -> None:
    """Show the state of job JOB_ID (and its progress while it runs)."""
    with JobQueue(cli_settings()) as queue:
        handle = queue.handle(job_id)
        state = handle.status()
        _known_or_fail(queue, job_id, state)
        progress = handle.progress()
        record = queue.job_record(job_id) or {}
        place = handle.position() if state == "PENDING" else None
    if as_json:
        echo_json({"job_id": job_id, "state": state, "model": record.get("model"),
                   "kind": record.get("kind"),
                   "progress": progress.model_dump(mode="json") if progress else None,
                   "position": dataclasses.asdict(place) if place else None})
        return
    line = f"{job_id}: {state}"
    if record:
        line += f" ({record.get('kind')} on {record.get('model')})"
    if place:
        start = ("unknown (too few jobs finished lately)" if place.estimated_start_s is None
                 else f"in ~{place.estimated_start_s:.0f}s")
        line += f" — waiting, {place.priority} priority, {place.ahead} job(s) ahead, starts {start}"
    if progress:
        line += (f" — {progress.phase}, {progress.tokens_so_far} tokens so far, prompt "
                 f"{progress.prompt_progress:.0%}")
    click.echo(line)


@main.command()
@click.argument("job_id")
@click.option("--timeout", "timeout_s", type=float, default=0.0,
              help="Wait up to this many seconds for the job to finish (default: do not wait).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def result(job_id: str, timeout_s: float, as_json: bool) -> None:
    """Print the result of job JOB_ID; a cancelled job's partial result is marked CANCELLED."""
    with JobQueue(cli_settings()) as queue:
        handle = queue.handle(job_id)
        _known_or_fail(queue, job_id, handle.status())
        config = (queue.job_record(job_id) or {}).get("config")
        try:
            found = handle.result(timeout=timeout_s)
        except JobCancelledError as exc:
            _print_cancelled(job_id, exc.partial, as_json)
            return
        except JobTimeoutError:
            raise click.ClickException(
                f"job {job_id} is not finished (state {handle.status()}); "
                "try again later or pass --timeout") from None
    if as_json:
        echo_json({"job_id": job_id, "state": states.SUCCESS, "cancelled": False,
                   "config": config, "result": found.model_dump(mode="json")})
        return
    click.echo(result_text(found))
    click.echo(stats_line(found))
    if config:  # the prediction config as sent, secrets masked
        click.echo(config_summary(config))


def _print_cancelled(job_id: str, partial: dict[str, Any] | None, as_json: bool) -> None:
    if as_json:
        echo_json({"job_id": job_id, "state": states.REVOKED, "cancelled": True,
                   "partial": partial})
        return
    click.echo(f"CANCELLED: job {job_id} was cancelled; partial result:")
    click.echo(partial_text(partial))
    stats = (partial or {}).get("stats") or {}
    if stats:
        click.echo(f"[stop {stats.get('stop_reason')}, "
                   f"{stats.get('predicted_tokens_count')} tokens predicted before the cancel]")


@main.command()
@click.argument("job_id", required=False)
@click.option("--all", "all_jobs", is_flag=True, help="Cancel every queued and running job "
              "of --model.")
@click.option("--model", default=None, help="With --all: the model whose jobs to cancel.")
@click.option("--batch", "batch_id", default=None, help="Cancel every job of this batch.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cancel(job_id: str | None, all_jobs: bool, model: str | None, batch_id: str | None,
           yes: bool, as_json: bool) -> None:
    """Cancel job JOB_ID, every job of a model (--all --model M) or a batch (--batch ID)."""
    chosen = [bool(job_id), all_jobs, bool(batch_id)]
    if sum(chosen) != 1:
        raise click.UsageError("give exactly one of JOB_ID, --all --model M, --batch ID")
    if all_jobs and not model:
        raise click.UsageError("--all needs --model M (the model whose jobs to cancel)")
    with JobQueue(cli_settings()) as queue:
        if job_id:
            _cancel_one(queue, job_id, as_json)
        elif batch_id:
            _cancel_batch(queue, batch_id, as_json)
        else:
            assert model is not None
            if not yes:
                click.confirm(f"Cancel every queued and running job of model {model!r}?",
                              abort=True)
            done = queue.cancel_model(model)
            if as_json:
                echo_json({"model": model, "revoked": done.revoked})
            else:
                click.echo(f"revoked {len(done.revoked)} job(s) of model {model}")


def _cancel_one(queue: JobQueue, job_id: str, as_json: bool) -> None:
    outcome = queue.cancel(job_id)
    if as_json:
        echo_json({"job_id": job_id, "outcome": outcome.value})
    if outcome is CancelOutcome.UNKNOWN:
        raise click.ClickException(f"unknown job id {job_id!r}: nothing to cancel")
    if as_json:
        return
    if outcome is CancelOutcome.ALREADY_FINISHED:
        click.echo(f"job {job_id} had already finished ({queue.handle(job_id).status()}): "
                   "nothing changed")
    else:
        click.echo(f"revoked job {job_id}")


def _cancel_batch(queue: JobQueue, batch_id: str, as_json: bool) -> None:
    done = queue.cancel_batch(batch_id)
    if done is None:
        raise click.ClickException(f"unknown batch id {batch_id!r}: nothing to cancel")
    if as_json:
        echo_json({"batch_id": batch_id, "revoked": done.revoked, "finished": done.finished})
        return
    click.echo(f"batch {batch_id}: revoked {len(done.revoked)} job(s); "
               f"{len(done.finished)} had already finished")
