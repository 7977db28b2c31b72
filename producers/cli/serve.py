"""`lmq serve`: the OpenAI-compatible HTTP gateway to the pool (`producers.gateway`)."""

from __future__ import annotations

import sys

import click

from producers.cli import main
from producers.cli._context import cli_settings
from workers.error import ConfigError

EXIT_CONFIG = 78  # EX_CONFIG, as the worker and Flower exit on a wrong setting


@main.command()
@click.option("--host", default=None, help="Address to listen on (default LMQ_GATEWAY_HOST; "
              "127.0.0.1 only when LMQ_API_KEYS is unset).")
@click.option("--port", type=int, default=None, help="Port (default LMQ_GATEWAY_PORT).")
@click.option("--hash-key", metavar="KEY", default=None,
              help="Print KEY as sha256:<hex> for LMQ_API_KEYS, and exit.")
def serve(host: str | None, port: int | None, hash_key: str | None) -> None:
    """Serve the OpenAI API (chat, completions, embeddings, files, batches) over the pool."""
    from producers.gateway.auth import hash_key as hashed

    if hash_key is not None:
        click.echo(hashed(hash_key))
        return
    from producers.gateway.server import run

    try:
        run(cli_settings(), host, port)
    except ConfigError as exc:  # a setting to fix: exit 78, so systemd does not restart it
        click.echo(f"lmq serve: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
