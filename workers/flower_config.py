"""`celery -A workers flower` with the project's configuration and nothing else typed.

How it gets there: `celery -A workers ...` imports `workers.celery` (to find `app`) before
it runs the subcommand, and that import calls `workers.metrics.connect(app)`, which calls
`install_if_flower(app)`. When the subcommand is `flower`, this sets Flower's (tornado)
options to our values *before* Flower reads its own sources, so the usual Flower layering
still holds on top of ours: `FLOWER_*` environment variables, then `flowerconfig.py` (or
`--conf`), then command-line flags override what is set here. Nothing here depends on the
working directory. Set here:

- `port` = `LMQ_FLOWER_PORT`, `max_tasks` = `LMQ_FLOWER_MAX_TASKS` (Flower's memory grows
  with it), `enable_events` on (workers send task events and `task-sent` too, so jobs show
  from the moment they are queued);
- `basic_auth` from `LMQ_FLOWER_BASIC_AUTH` (`user:pass[,user2:pass2]`). The UI and the HTTP
  API (`/api/...`, used by the Revoke and Terminate buttons) then take that auth.
  **Unset:** Flower binds to 127.0.0.1 only, and Flower itself keeps its HTTP API off
  without auth (so Revoke/Terminate answer 401 with Flower's message); a warning at start
  says how to turn auth on. An explicit `--address`/`FLOWER_ADDRESS` or Flower's own
  `--basic-auth` still win: that is the operator's choice.
- `format_task` = `workers.flower_view.format_task` bound to the app: arguments shortened
  and safe, results with the prediction stats first, the PROGRESS state and meta of running
  jobs, and REVOKED with the partial result of cancelled jobs (read from the result backend).
- the task page shows Revoke and Terminate for running jobs (PROGRESS included); both map to
  a prediction cancel in our workers.
- Flower's `/metrics` also carries the pool's metrics (`workers.flower_metrics`): one scrape
  target for Flower and every worker.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery

from workers.settings import Settings, get_settings

log = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
NO_AUTH_WARNING = (
    "LMQ_FLOWER_BASIC_AUTH is not set: Flower listens on 127.0.0.1 only and its HTTP API "
    "(Revoke/Terminate buttons, /api/...) stays off. Set LMQ_FLOWER_BASIC_AUTH=user:password "
    "to serve Flower with basic auth on all interfaces."
)


def running_flower() -> bool:
    """True inside `celery ... flower` (the subcommand Celery is about to run)."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.invoked_subcommand is not None:
        return bool(ctx.invoked_subcommand == "flower")
    return "flower" in sys.argv[1:]


def install_if_flower(app: Celery) -> bool:
    if not running_flower():
        return False
    install(app, get_settings())
    return True


def option_values(settings: Settings) -> dict[str, Any]:
    """Flower options derived from settings (before FLOWER_* / config file / flags)."""
    values: dict[str, Any] = {
        "port": settings.flower_port,
        "max_tasks": settings.flower_max_tasks,
        "enable_events": True,
    }
    auth = settings.flower_basic_auth.get_secret_value() if settings.flower_basic_auth else ""
    credentials = [c.strip() for c in auth.split(",") if c.strip()]
    if credentials:
        values["basic_auth"] = credentials
    else:
        values["address"] = LOCALHOST
    return values


def install(app: Celery, settings: Settings) -> None:
    """Apply our options, task view, template tweak and metrics collector to Flower."""
    import flower.options  # noqa: F401  (defines Flower's options)
    from tornado.options import options

    from workers import flower_metrics, flower_view

    values = option_values(settings)
    for name, value in values.items():
        setattr(options, name, value)
    options.format_task = flower_view.make_format_task(app)
    flower_view.install_template_tweak()
    flower_metrics.register_default(settings.store_url)
    if "basic_auth" not in values:
        log.warning(NO_AUTH_WARNING)
        print(NO_AUTH_WARNING, file=sys.stderr)
