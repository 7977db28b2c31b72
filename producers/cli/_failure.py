"""The one line a failed command prints, whatever failed.

`one_line_error` (in _context) knows the pool's own errors, settings and Redis; here are
the rest a user meets on real input: LM Studio (unreachable, no such model, too slow), files
(missing, unwritable, disk full), and, for anything no one foresaw, a one-line pointer to a
traceback file: a user gets one line to act on, the traceback is kept for a bug report.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from pathlib import Path

from producers.cli._context import cli_settings, one_line_error


def failure_line(exc: BaseException) -> str:
    """One line saying what failed and what to do about it."""
    return (one_line_error(exc) or _lmstudio_error(exc) or _file_error(exc)
            or _unexpected(exc))


def _lmstudio_error(exc: BaseException) -> str | None:
    lms = sys.modules.get("lmstudio")  # not imported: the error cannot be one of its own
    httpx = sys.modules.get("httpx")  # the SDK's websocket transport
    hint = "see LMQ_LMSTUDIO_HOST or --lmstudio-host"
    if lms is not None and isinstance(exc, lms.LMStudioModelNotFoundError):
        return (f"LM Studio at {_host()} has no such model ({_first_line(exc)}): pass a "
                "model it has downloaded (`lmq models` lists them)")
    if lms is not None and isinstance(exc, lms.LMStudioError):
        return f"LM Studio at {_host()}: {_first_line(exc)} ({hint})"
    if httpx is not None and isinstance(exc, httpx.TimeoutException):
        return f"LM Studio at {_host()} did not answer in time: is it overloaded? ({hint})"
    return None


def _host() -> str:
    return cli_settings().lmstudio_host


def _file_error(exc: BaseException) -> str | None:
    if not isinstance(exc, OSError) or exc.strerror is None:
        return None
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror}{where} (check the path, its permissions and free disk space)"


def _unexpected(exc: BaseException) -> str:
    report = Path(tempfile.gettempdir()) / "lmq-error.txt"
    try:
        report.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
        kept = f"the traceback is in {report}"
    except OSError:
        kept = "rerun to reproduce it"
    return (f"unexpected error {type(exc).__name__}: {_first_line(exc)} (a bug in lmq: "
            f"please report it; {kept})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
