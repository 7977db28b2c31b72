"""The `lmq` command line. Each area registers its commands from its own module."""

from __future__ import annotations

import importlib

import click

# Modules that define click commands on `main`; each adds itself with @main.command().
COMMAND_MODULES: tuple[str, ...] = ()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lmstudio-queue")
def main() -> None:
    """lmstudio-queue: a Celery + Redis worker pool for batch inference on LM Studio."""


for _module in COMMAND_MODULES:
    importlib.import_module(f"producers.cli.{_module}")
