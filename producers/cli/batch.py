"""`lmq batch submit|status|cancel|results`: OpenAI Batch API files through the pool."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from producers.cli import main
from producers.cli._context import cli_settings, echo_json
from workers.celery_config import PRIORITIES

if TYPE_CHECKING:
    from producers.job_queue import JobQueue


def _queue() -> JobQueue:
    from producers.job_queue import JobQueue

    return JobQueue(cli_settings())


class _BatchGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        from producers.batch import BatchNotFoundError

        try:
            return super().invoke(ctx)
        except BatchNotFoundError as exc:
            raise click.ClickException(str(exc)) from None


@main.group("batch", cls=_BatchGroup)
def batch_group() -> None:
    """OpenAI Batch API input files: submit, status, cancel, results."""


@batch_group.command("submit")
@click.argument("requests", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model-map", multiple=True, metavar="NAME=MODEL",
              help="Run requests for model NAME on our MODEL (repeatable).")
@click.option("--enqueue-anyway", is_flag=True, help="Send even if no worker serves a model.")
@click.option("--priority", type=click.Choice(PRIORITIES), default="low", show_default=True,
              help="Priority of the batch's jobs (batches are bulk work: low by default).")
@click.option("--completion-window", default=None, metavar="24h",
              help="OpenAI's completion window: a job not started within it never runs "
              "(expires with JobExpiredError).")
@click.option("--json", "as_json", is_flag=True)
def submit_command(requests: Path, model_map: tuple[str, ...], enqueue_anyway: bool,
                   priority: str, completion_window: str | None, as_json: bool) -> None:
    """Validate every line of REQUESTS, then enqueue them all; prints the batch id."""
    from producers.batch import (
        BatchInvalidError,
        completion_window_s,
        parse_model_map,
        submit_file,
    )

    try:
        mapping = parse_model_map(model_map)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model-map") from None
    try:
        expires_s = completion_window_s(completion_window) if completion_window else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--completion-window") from None
    with _queue() as queue:
        try:
            batch_id, validation = submit_file(queue, requests, mapping,
                                               enqueue_anyway=enqueue_anyway,
                                               priority=priority, expires_s=expires_s)
        except BatchInvalidError as exc:
            click.echo(f"{requests}: nothing enqueued, fix these lines:\n{exc.args[0]}", err=True)
            sys.exit(2)
    if as_json:
        echo_json({"batch_id": batch_id, "requests": len(validation.requests)})
    else:
        click.echo(f"{batch_id}  ({len(validation.requests)} requests enqueued)")


@batch_group.command("status")
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True)
def status_command(batch_id: str, as_json: bool) -> None:
    """Counts of the batch's jobs per state."""
    from producers.batch import status

    with _queue() as queue:
        info = status(queue, batch_id)
    if as_json:
        echo_json(info)
        return
    counts = ", ".join(f"{state} {n}" for state, n in info["counts"].items())
    note = " (cancelled)" if info["cancelled_at"] else ""
    click.echo(f"{batch_id}{note}: {info['finished']}/{info['total']} finished; {counts}")


@batch_group.command("cancel")
@click.argument("batch_id")
def cancel_command(batch_id: str) -> None:
    """Revoke the batch's unfinished jobs; finished and partial results are kept."""
    from producers.batch import cancel

    with _queue() as queue:
        outcome = cancel(queue, batch_id)
    click.echo(f"{batch_id}: revoked {outcome['revoked']} jobs, "
               f"{outcome['finished']} had already finished")


@batch_group.command("results")
@click.argument("batch_id")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--errors", "-e", "errors", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Error file (default: <out>.errors.jsonl).")
@click.option("--wait", "wait_s", type=float, default=0.0,
              help="Wait up to this many seconds for unfinished jobs first.")
def results_command(batch_id: str, out: Path, errors: Path | None, wait_s: float) -> None:
    """Write OpenAI-format output and error files, matched by custom_id."""
    from producers.batch import wait_finished, write_results

    errors = errors or out.with_name(out.stem + ".errors.jsonl")
    with _queue() as queue:
        if wait_s > 0:
            wait_finished(queue, batch_id, wait_s)
        counts = write_results(queue, batch_id, out, errors)
    click.echo(f"{counts.results} results -> {out}; {counts.errors} errors -> {errors}"
               + (f"; {counts.pending} not finished yet" if counts.pending else ""))
