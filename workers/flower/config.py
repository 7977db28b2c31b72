"""`celery -A workers flower` with the project's configuration and nothing else typed.

How it gets there: `celery -A workers ...` imports `workers.celery` (to find `app`) before
it runs the subcommand, and that import calls `install_if_flower(app)` (from
`workers.celery.create_app`). When the subcommand is `flower`, this sets Flower's (tornado)
options to our values *before* Flower reads its own sources, so the usual Flower layering
still holds on top of ours: `FLOWER_*` environment variables, then `flowerconfig.py` (or
`--conf`), then command-line flags override what is set here. Nothing here depends on the
working directory. Set here:

- `port` = `LMQ_FLOWER_PORT`, `max_tasks` = `LMQ_FLOWER_MAX_TASKS` (Flower's memory grows
  with it), `enable_events` on (workers send task events and `task-sent` too, so jobs show
  from the moment they are queued);
- `basic_auth` from `LMQ_FLOWER_BASIC_AUTH` (`user:pass[,user2:pass2]`). The UI and the HTTP
  API (`/api/...`, used by the Revoke and Terminate buttons) then take that auth.
- **Auth is required.** Once Flower has read all its sources, and before it serves anything,
  `check_auth` looks at the result: basic auth (ours, or Flower's own `--basic-auth` /
  `FLOWER_BASIC_AUTH`) or OAuth (`--auth` / `FLOWER_AUTH`) lets it start. Without any, Flower
  refuses: one line on stderr naming `LMQ_FLOWER_BASIC_AUTH=user:password`, exit status
  `EXIT_NO_AUTH` (78, EX_CONFIG: the systemd unit does not restart on it), no traceback.
  `LMQ_FLOWER_ALLOW_NO_AUTH=true` is the opt-out for local development: Flower then binds to
  127.0.0.1 (an explicit `--address`/`FLOWER_ADDRESS` still wins: the operator's choice),
  Flower itself keeps its HTTP API off without auth (Revoke/Terminate answer 401 with
  Flower's message), and a warning at start says so; Flower's own
  `FLOWER_UNAUTHENTICATED_API=true` still turns that API on (the operator's explicit
  choice), and the warning then says the API is on for anyone who can reach it.
  Credentials are never logged or printed.
  The hook wraps `flower.command.extract_settings`, which Flower 2.x calls right after
  parsing: a Flower without it refuses to start, and tests/integration/test_flower.py
  fails on a Flower that stops calling it.
- `format_task` = `workers.flower.view.format_task` bound to the app: arguments shortened
  and safe, results with the prediction stats first, the PROGRESS state and meta of running
  jobs, and REVOKED with the partial result of cancelled jobs (read from the result backend).
- the task page shows Revoke and Terminate for running jobs (PROGRESS included); both map to
  a prediction cancel in our workers.
- the home page (Workers) shows the jobs waiting per model and priority, read from the
  broker's Redis at each page load (`workers.flower.waiting`).
- Flower's `/metrics` also carries the pool's metrics (`workers.prometheus`): one scrape
  target for Flower and every worker.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, NoReturn

from celery import Celery

from workers.settings import Settings, get_settings

log = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
EXIT_NO_AUTH = 78  # EX_CONFIG (sysexits.h): a configuration error, not worth a restart
NO_AUTH_REFUSAL = (
    "Flower refuses to start without auth: set LMQ_FLOWER_BASIC_AUTH=user:password "
    "(or LMQ_FLOWER_ALLOW_NO_AUTH=true for a Flower without auth on 127.0.0.1, "
    "local development only)"
)
NO_AUTH_WARNING = (
    "Flower runs WITHOUT auth (LMQ_FLOWER_ALLOW_NO_AUTH=true): it listens on %s only and its "
    "HTTP API (Revoke/Terminate buttons, /api/...) stays off. Set "
    "LMQ_FLOWER_BASIC_AUTH=user:password for anything but local development."
)
NO_AUTH_API_WARNING = (
    "Flower runs WITHOUT auth (LMQ_FLOWER_ALLOW_NO_AUTH=true) on %s, and its HTTP API "
    "(Revoke/Terminate, /api/...) is ON for anyone who can reach it, because "
    "FLOWER_UNAUTHENTICATED_API is set. Set LMQ_FLOWER_BASIC_AUTH=user:password for anything "
    "but local development."
)
UNSUPPORTED_FLOWER = (
    "Flower refuses to start: this Flower version has no flower.command.extract_settings, "
    "so lmstudio-queue cannot check that auth is on (supported: Flower 2.x)"
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
    return values


def install(app: Celery, settings: Settings) -> None:
    """Apply our options, task view, template tweak and metrics collector to Flower."""
    import flower.options  # noqa: F401  (defines Flower's options)
    from tornado.options import options

    from workers import prometheus
    from workers.flower import broker as flower_broker
    from workers.flower import view as flower_view

    for name, value in option_values(settings).items():
        setattr(options, name, value)
    options.format_task = flower_view.make_format_task(app)
    flower_view.install_template_tweak()
    flower_broker.install(app)
    prometheus.register_default(settings.store_url)
    check_auth_once_parsed(settings.flower_allow_no_auth)


def check_auth_once_parsed(allow_no_auth: bool) -> None:
    """Run `check_auth` after Flower has read FLOWER_*, its config file and its flags."""
    import flower.command
    from tornado.options import options

    extract_settings = getattr(flower.command, "extract_settings", None)
    if not callable(extract_settings):
        refuse(UNSUPPORTED_FLOWER)

    def check_then_extract() -> None:
        check_auth(options, allow_no_auth)
        extract_settings()

    flower.command.extract_settings = check_then_extract


def check_auth(options: Any, allow_no_auth: bool) -> None:
    """Let Flower start only with auth on, or without it on 127.0.0.1 when allowed."""
    if any(options.basic_auth or ()) or options.auth:
        return
    if not allow_no_auth:
        refuse(NO_AUTH_REFUSAL)
    if not options.address:
        options.address = LOCALHOST
    # Flower reads FLOWER_UNAUTHENTICATED_API itself, per request: the operator's explicit
    # choice (like an explicit address), honoured, but the warning must say the API is on.
    log.warning(NO_AUTH_API_WARNING if unauthenticated_api() else NO_AUTH_WARNING,
                options.address)


def unauthenticated_api() -> bool:
    """Flower's own reading of FLOWER_UNAUTHENTICATED_API (an unreadable value: off)."""
    from flower.utils import strtobool

    try:
        return bool(strtobool(os.environ.get("FLOWER_UNAUTHENTICATED_API") or "false"))
    except ValueError:
        return False


def refuse(message: str) -> NoReturn:
    """One line on stderr and exit status EXIT_NO_AUTH: no traceback, nothing to retry."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(EXIT_NO_AUTH)
