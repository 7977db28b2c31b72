"""The `lmq` command line. Each area registers its commands from its own module.

Options fill one `CliConfig` (producers.cli._context); settings come from `LMQ_*` and the
group's options override them. User mistakes and unreachable services end in one line on
stderr and a non-zero exit, never a traceback (see `LmqGroup`).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from producers.cli._context import CliConfig
from producers.cli._failure import failure_line
from producers.cli._signals import Terminated, sigterm_interrupts

# Modules that define click commands on `main`; each adds itself with @main.command().
COMMAND_MODULES: tuple[str, ...] = (
    "jobs",
    "control",
    "cluster",
    "config",
    "sim",
    "demo",
    "gpu",
    "corpus",
    "batch",
    "metrics",
    "serve",
)


class LmqGroup(click.Group):
    """Turns every failure (bad job, unknown model, Redis down, a bug, ...) into one line;
    SIGTERM ends a command as Ctrl-C does, with its cleanup (`_signals`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with sigterm_interrupts():
                return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Terminated:
            click.echo("terminated", err=True)
            raise click.exceptions.Exit(Terminated.exit_code) from None
        except Exception as exc:  # noqa: BLE001 - a bug too is one line (and a traceback file)
            raise click.ClickException(failure_line(exc)) from None


@click.group(cls=LmqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lmstudio-queue")
@click.option("--broker-url", default=None, help="Override LMQ_BROKER_URL.")
@click.option("--lmstudio-host", default=None, help="Override LMQ_LMSTUDIO_HOST.")
@click.pass_context
def main(ctx: click.Context, broker_url: str | None, lmstudio_host: str | None) -> None:
    """lmstudio-queue: a Celery + Redis worker pool for batch inference on LM Studio."""
    ctx.obj = CliConfig(broker_url=broker_url, lmstudio_host=lmstudio_host)


for _module in COMMAND_MODULES:
    importlib.import_module(f"producers.cli.{_module}")
