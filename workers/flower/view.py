"""What Flower shows of our jobs: its `format_task` hook, a task-page tweak, and the
waiting jobs per model and priority on its home page (`workers.flower.waiting`).

Flower knows a task from its events only: the PROGRESS state (`update_state`) and the end
state a cancelled job stores (REVOKED with its partial result) never reach it as events.
`format_task` therefore reads the result backend for tasks whose event state is not final,
and renders results with the stats first (`workers.task_display`). It runs only for the
rows and the task page being displayed: one Redis GET each, never for the whole history.
"""

from __future__ import annotations

import ast
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery, states

from workers.contract import PROGRESS
from workers.flower import waiting
from workers.task_display import (
    MAX_REPR_CHARS,
    mask_secrets,
    progress_summary,
    result_summary,
)

log = logging.getLogger(__name__)

# Event states after which the backend may know more (PROGRESS, a stored REVOKED).
_ASK_BACKEND = frozenset(
    {states.RECEIVED, states.STARTED, PROGRESS, states.REVOKED, states.PENDING}
)


def short_repr(text: Any, limit: int = MAX_REPR_CHARS) -> Any:
    """An args/kwargs repr from an event, masked and capped (producers that did not pass
    `argsrepr` still send up to 1 KiB of raw arguments)."""
    if not isinstance(text, str):
        return text
    text = mask_secrets(text)
    return text if len(text) <= limit else f"{text[:limit]}…({len(text):,} chars)"


def _literal(text: Any) -> Any:
    if not isinstance(text, str) or not text.startswith("{"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None  # cut by Celery's resultrepr_maxsize: read the backend instead


def _partial_of(result: Any) -> Mapping[str, Any] | None:
    for arg in getattr(result, "args", ()) or ():
        if isinstance(arg, Mapping):
            return arg
    return result if isinstance(result, Mapping) else None


def apply_backend_meta(task: Any, meta: Mapping[str, Any]) -> None:
    """Show the backend's state for `task` when it says more than the events."""
    status, result = meta.get("status"), meta.get("result")
    if status == PROGRESS:
        task.state, task.result = PROGRESS, progress_summary(result)
    elif status == states.REVOKED:
        task.state = states.REVOKED
        partial = _partial_of(result)
        task.result = result_summary(partial, cancelled=True) if partial else str(result)
    elif status == states.SUCCESS and isinstance(result, Mapping):
        task.state, task.result = states.SUCCESS, result_summary(result)


def make_format_task(app: Celery) -> Callable[[Any], Any]:
    """Flower's `format_task` option for `app` (called with a copy of each shown task)."""
    backend = app.backend

    def format_task(task: Any) -> Any:
        task.args = short_repr(getattr(task, "args", None))
        task.kwargs = short_repr(getattr(task, "kwargs", None))
        parsed = _literal(getattr(task, "result", None))
        if task.state == states.SUCCESS and isinstance(parsed, Mapping):
            task.result = result_summary(parsed)
        elif task.state in _ASK_BACKEND or task.state == states.SUCCESS:
            try:
                apply_backend_meta(task, backend.get_task_meta(task.uuid, cache=False))
            except Exception:  # the page still renders from the events alone
                log.warning("flower: no backend state for %s", task.uuid, exc_info=True)
        return task

    return format_task


# --------------------------------------------------------------------------------------
# Task page: Revoke and Terminate for running jobs
# --------------------------------------------------------------------------------------

_BUTTONS = re.compile(
    r'{% if task\.state == "STARTED" %}.*?id="task-revoke".*?{% end %}', re.DOTALL
)
_OUR_BUTTONS = """{% if task.state in ("STARTED", "PROGRESS") %}
      <button class="btn btn-danger" id="task-terminate">Terminate</button>
      {% end %}
      {% if task.state in ("RECEIVED", "RETRY", "STARTED", "PROGRESS", "PENDING") %}
      <button class="btn btn-danger" id="task-revoke">Revoke</button>
      {% end %}"""


def patched_task_page(source: str) -> str:
    """Flower's task.html with Revoke for every unfinished job and Terminate while running
    (Flower offers Revoke only before a job starts and nothing in custom states)."""
    patched, count = _BUTTONS.subn(lambda _: _OUR_BUTTONS, source, count=1)
    if not count:
        log.warning("flower: task.html changed upstream; Revoke/Terminate left as Flower has them")
    return patched


# --------------------------------------------------------------------------------------
# Workers page (Flower's home): the jobs waiting per model and priority
# --------------------------------------------------------------------------------------

_WORKERS_TABLE = '<section class="workers-table-card" aria-label="Workers">'


def patched_workers_page(source: str) -> str:
    """Flower's workers.html with our waiting-jobs panel above its workers table."""
    if _WORKERS_TABLE not in source:
        log.warning("flower: workers.html changed upstream; the waiting-jobs panel is left out")
        return source
    return source.replace(_WORKERS_TABLE, waiting.PANEL + _WORKERS_TABLE, 1)


_PATCHES: dict[str, Callable[[str], str]] = {
    "task.html": patched_task_page,
    "workers.html": patched_workers_page,
}


def install_template_tweak() -> None:
    """Serve Flower's templates through a loader that patches task.html and workers.html."""
    import tornado.template
    from flower.urls import settings

    class Loader(tornado.template.Loader):
        def _create_template(self, name: str) -> tornado.template.Template:
            patch = _PATCHES.get(name)
            if patch is None:
                return super()._create_template(name)
            with open(os.path.join(self.root, name), encoding="utf-8") as page:
                source = patch(page.read())
            return tornado.template.Template(source, name=name, loader=self)

    settings["template_loader"] = Loader(settings["template_path"])
