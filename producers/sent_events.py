"""`task-sent` events for jobs published without `send_task` (for Flower).

Celery's `send_task` emits a `task-sent` event when `task_send_sent_event` is on, and that
is how Flower shows a job from the moment it is queued. Producers that push task messages
straight into Redis (pipelined bulk publishing) bypass it; they call `send_sent_events`
(or a long-lived `SentEvents`) after publishing so Flower still sees every queued job, with
its short `argsrepr`.

The events of one call go out as one message (Celery's buffered `task.multi` form, a list
of events that every `EventReceiver`, Flower's included, unpacks): on Redis one PUBLISH for
the whole chunk, where one event per job cost a round trip each (27 s of a 42 s 10k-line
batch intake). `SentEvents` keeps one broker connection and event dispatcher open: opening
them costs 5-25 ms, more than the whole publish of one job. The jobs are already queued when
their events go out, so a failed event is logged, never raised: the caller must not resubmit.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from celery import Celery

from workers.task_display import argsrepr

log = logging.getLogger(__name__)

# (job id, task name, job dict or its `argsrepr` already made by the publisher, queue)
SentJob = tuple[str, str, Mapping[str, Any] | str, str]

# Events per message: the publisher's chunks (500 jobs, ~0.3 MB of events) fit in one.
EVENTS_PER_MESSAGE = 1000


def sent_event_fields(job_id: str, task_name: str, job: Mapping[str, Any] | str,
                      queue: str) -> dict[str, Any]:
    """The fields Celery itself puts in a `task-sent` event."""
    shown = job if isinstance(job, str) else argsrepr(job)
    return {
        "uuid": job_id, "root_id": job_id, "parent_id": None, "name": task_name,
        "args": f"({shown},)", "kwargs": "{}", "retries": 0, "eta": None,
        "expires": None, "queue": queue, "exchange": "", "routing_key": queue,
    }


def send_sent_events(app: Celery, jobs: Iterable[SentJob]) -> int:
    """Emit one `task-sent` event per job over one connection; returns how many were sent.

    A no-op (0) when `task_send_sent_event` is off in the app's configuration."""
    if not app.conf.task_send_sent_event:
        return 0
    with app.connection_for_write() as connection, _dispatcher(app, connection) as events:
        return _send_buffered(events, jobs)


def _dispatcher(app: Celery, connection: Any) -> Any:
    """A dispatcher that buffers task events and raises when the broker refuses them (its
    default buffers them silently for a later flush that a producer never makes)."""
    return app.events.Dispatcher(connection, buffer_group={"task"},
                                 buffer_limit=EVENTS_PER_MESSAGE, buffer_while_offline=False)


def _send_buffered(dispatcher: Any, jobs: Iterable[SentJob]) -> int:
    sent = 0
    for job_id, task_name, job, queue in jobs:
        dispatcher.send("task-sent", **sent_event_fields(job_id, task_name, job, queue))
        sent += 1
    dispatcher.flush(errors=False, groups=True)
    return sent


class SentEvents:
    """`task-sent` events over one connection kept open between calls; thread-safe."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._connection: Any = None
        self._dispatcher: Any = None
        self._lock = threading.Lock()

    def send(self, jobs: Iterable[SentJob]) -> int:
        """Emit one event per job; returns how many were sent (0 when events are off)."""
        if not self.app.conf.task_send_sent_event:
            return 0
        jobs = list(jobs)
        with self._lock:
            for attempt in (1, 2):  # a connection the broker dropped since: open a new one
                try:
                    return _send_buffered(self._open(), jobs)
                except Exception as exc:  # noqa: BLE001 - the jobs are queued: never raise
                    self._close()
                    if attempt == 2:
                        log.warning("task-sent events of %d jobs not sent (Flower shows them "
                                    "once they start): %s", len(jobs), exc)
        return 0

    def close(self) -> None:
        with self._lock:
            self._close()

    def _open(self) -> Any:
        if self._dispatcher is None:
            self._connection = self.app.connection_for_write()
            self._dispatcher = _dispatcher(self.app, self._connection)
        return self._dispatcher

    def _close(self) -> None:
        dispatcher, connection = self._dispatcher, self._connection
        self._dispatcher = self._connection = None
        for part in (dispatcher, connection):
            if part is not None:
                with contextlib.suppress(Exception):  # closing a dead connection may fail
                    part.close()
