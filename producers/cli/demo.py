"""`lmq demo`: run the main job end to end, starting whatever is missing."""

from __future__ import annotations

import click

from producers.cli import main
from producers.cli._context import cli_settings


@main.command()
@click.option("--chat-model", default=None, help="Chat model to use on a real LM Studio.")
@click.option("--embed-model", default=None, help="Embedding model to use on a real LM Studio.")
def demo(chat_model: str | None, embed_model: str | None) -> None:
    """Run a chat, a completion and an embedding job through the pool (starts Redis, the
    simulator and workers when they are missing, and stops them after)."""
    from producers.demo import run_demo
    from producers.demo_stack import StartError

    def say(line: str) -> None:
        click.echo(f"-> {line}", err=True)

    try:
        run_demo(cli_settings(), chat_model, embed_model, say)
    except StartError as exc:
        raise click.ClickException(str(exc)) from None
