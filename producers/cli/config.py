"""`lmq config show`: every setting with its value and description, secrets masked."""

from __future__ import annotations

from dataclasses import asdict

import click

from producers.cli import main
from producers.cli._context import cli_settings, echo_json
from producers.settings_view import setting_rows


@main.group()
def config() -> None:
    """Inspect the settings (LMQ_* environment variables and .env)."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(as_json: bool) -> None:
    """Print every setting with its value and description (secrets masked)."""
    rows = setting_rows(cli_settings())
    if as_json:
        echo_json([asdict(row) for row in rows])
        return
    for row in rows:
        click.echo(f"{row.env_var} = {row.value}")
        click.echo(f"    {row.description}")
