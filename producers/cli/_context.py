"""The one config object CLI options fill, and the one-line error messages.

Options declare no environment variables of their own: settings come from `LMQ_*` (read in
workers.settings) and the group options override them here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click
import redis
from kombu.exceptions import OperationalError
from pydantic import ValidationError

from producers.settings_view import mask_url
from workers.error import LmqError
from workers.settings import Settings, get_settings


@dataclass
class CliConfig:
    """Group-level overrides of settings (None: keep the setting)."""

    broker_url: str | None = None
    lmstudio_host: str | None = None

    def settings(self) -> Settings:
        base = get_settings()
        update: dict[str, Any] = {}
        if self.broker_url:
            update["broker_url"] = self.broker_url
        if self.lmstudio_host:
            update["lmstudio_host"] = Settings(lmstudio_host=self.lmstudio_host).lmstudio_host
        return base.model_copy(update=update) if update else base


def cli_config() -> CliConfig:
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(CliConfig) if ctx else None
    return found or CliConfig()


def cli_settings() -> Settings:
    return cli_config().settings()


def one_line_error(exc: BaseException) -> str | None:
    """A one-line message for a failure a user can fix; None for a real bug."""
    if isinstance(exc, LmqError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"invalid setting {where}: {first['msg']}"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OperationalError):
        url = mask_url(cli_settings().broker_url)
        return f"cannot reach Redis at {url}: {exc} (is it running? see LMQ_BROKER_URL)"
    return None


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
