"""`lmq embed-corpus` and `lmq search`."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click

from producers.cli import main
from producers.cli._context import cli_settings, echo_json
from producers.cli._signals import Terminated
from workers.celery_config import PRIORITIES


@main.command("embed-corpus")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", "-m", required=True, help="Embedding model key.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl"]), default=None,
              help="Output format (default: from --out's suffix, else parquet).")
@click.option("--text-field", default="text", show_default=True, help="JSONL text field.")
@click.option("--chunk-tokens", default=512, show_default=True, type=click.IntRange(1))
@click.option("--overlap", default=64, show_default=True, type=click.IntRange(0),
              help="Tokens repeated between neighbouring chunks.")
@click.option("--exact-chunks", is_flag=True,
              help="Count every paragraph and chunk exactly (slower): --chunk-tokens becomes "
              "a hard limit. Default: calibrated estimates; only the context is hard.")
@click.option("--job-tokens", default=32768, show_default=True, type=click.IntRange(1),
              help="Token budget of one embedding job (at most 256 chunks). A job costs a "
              "worker a few ms besides its texts: against the simulator, 8192 gave ~25% "
              "less throughput.")
@click.option("--max-in-flight", default=8, show_default=True, type=click.IntRange(1),
              help="Embedding jobs queued or running at once (backpressure).")
@click.option("--retries", default=2, show_default=True, type=click.IntRange(0))
@click.option("--job-timeout", "job_timeout_s", default=300.0, show_default=True,
              help="Seconds before an unfinished job is resent (e.g. its worker died).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run of this command.")
@click.option("--restart", is_flag=True, help="Discard an interrupted run's state.")
@click.option("--enqueue-anyway", is_flag=True, help="Send even if no worker serves the model.")
@click.option("--priority", type=click.Choice(PRIORITIES), default="low", show_default=True,
              help="Priority of the corpus's jobs (bulk work: low by default).")
@click.option("--expires", "--expires-s", "expires_s", default=None,
              type=click.FloatRange(min=0, min_open=True),
              help="Per job: a job no worker started within this many seconds never runs; "
              "its chunks are listed as failed (not resent; --resume sends them again).")
@click.option("--time-limit", "--time-limit-s", "time_limit_s", default=None,
              type=click.FloatRange(min=0, min_open=True),
              help="Per job: cancel a job this many seconds after it started (retried "
              "like a failed job).")
@click.option("--progress/--no-progress", default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def embed_corpus_command(paths: tuple[str, ...], model: str, out: Path, fmt: str | None,
                         as_json: bool, overlap: int, **options: Any) -> None:
    """Embed every document under PATHS into a Parquet (or JSONL) file, resumably."""
    from producers.corpus import StateExistsError, StateMismatchError, embed_corpus

    fmt = fmt or ("jsonl" if out.suffix == ".jsonl" else "parquet")
    if overlap >= options["chunk_tokens"]:
        raise click.BadParameter(f"{overlap} is not smaller than --chunk-tokens "
                                 f"({options['chunk_tokens']})", param_hint="--overlap")
    try:
        summary = embed_corpus(list(paths), model=model, out=out, settings=cli_settings(),
                               fmt=fmt, overlap_tokens=overlap, **options)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (systemd, docker stop)
        how = "terminated" if isinstance(stop, Terminated) else "interrupted"
        click.echo(f"\n{how}: finished chunks are kept; run the same command with "
                   "--resume to continue", err=True)
        sys.exit(stop.exit_code if isinstance(stop, Terminated) else 130)
    except (StateExistsError, StateMismatchError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json(dataclasses.asdict(summary))
    else:
        for line in summary.lines():
            click.echo(line)
        for skipped in summary.skipped:
            click.echo(f"skipped {skipped['source']}: {skipped['reason']}", err=True)
    if not summary.ok:
        for line in summary.failure_lines():
            click.echo(line, err=True)
        click.echo(f"{summary.failed_chunks} chunks failed (listed in {summary.failed_file}); "
                   "rerun with --resume to retry them", err=True)
        sys.exit(1)


@main.command("search")
@click.argument("corpus", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("query")
@click.option("--model", "-m", required=True, help="The embedding model the corpus used.")
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(1))
@click.option("--timeout", "timeout_s", default=60.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def search_command(corpus: Path, query: str, model: str, k: int, timeout_s: float,
                   as_json: bool) -> None:
    """Print the K chunks of CORPUS nearest to QUERY (cosine)."""
    from producers.corpus import CorpusFileError, search

    try:
        hits = search(corpus, query, model=model, k=k, settings=cli_settings(),
                      timeout_s=timeout_s)
    except CorpusFileError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json([dataclasses.asdict(hit) for hit in hits])
        return
    for rank, hit in enumerate(hits, start=1):
        snippet = " ".join(hit.text.split())[:160]
        click.echo(f"{rank}. {hit.score:.4f}  {hit.source} #{hit.chunk_index} "
                   f"[{hit.start}:{hit.end}]\n   {snippet}")
