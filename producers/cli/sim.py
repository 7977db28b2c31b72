"""`lmq sim`: run the LM Studio-compatible simulator in the foreground."""

from __future__ import annotations

import click

from producers.cli import main


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=1234, show_default=True, help="Port (0: a free one).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Simulator config file (TOML or JSON).")
def sim(host: str, port: int, config_path: str | None) -> None:
    """Start the simulator (an LM Studio stand-in for tests, demos and benchmarks)."""
    from simulator import serve_forever

    click.echo(f"simulator: serving the LM Studio API on {host}:{port} (Ctrl-C stops it)",
               err=True)
    serve_forever(host, port, config_path)
