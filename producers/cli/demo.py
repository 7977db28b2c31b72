"""`lmq demo`: run the main job end to end, starting whatever is missing."""

from __future__ import annotations

import click

from producers.cli import main
from producers.cli._context import cli_settings


@main.command()
@click.option("--chat-model", default=None, help="Chat model to use on a real LM Studio.")
@click.option("--embed-model", default=None, help="Embedding model to use on a real LM Studio.")
@click.option("--sim-engine", type=click.Choice(["auto", "real", "deterministic"]),
              default="auto", show_default=True,
              help="Engine of the simulator the demo starts: auto = real small models on the "
                   "CPU when installed (ops/setup.d/local-models), else deterministic.")
def demo(chat_model: str | None, embed_model: str | None, sim_engine: str) -> None:
    """Run a chat, a completion and an embedding job through the pool (starts Redis, the
    simulator and workers when they are missing, and stops them after)."""
    from producers.cli._demo_run import run_demo
    from producers.demo_stack import StartError

    def say(line: str) -> None:
        click.echo(f"-> {line}", err=True)

    try:
        run_demo(cli_settings(), chat_model, embed_model, say, sim_engine)
    except StartError as exc:
        raise click.ClickException(str(exc)) from None
