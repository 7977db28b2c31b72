"""`task-sent` events for jobs published without `send_task` (for Flower).

Celery's `send_task` emits a `task-sent` event when `task_send_sent_event` is on, and that
is how Flower shows a job from the moment it is queued. Producers that push task messages
straight into Redis (pipelined bulk publishing) bypass it; they call `send_sent_events`
after publishing so Flower still sees every queued job, with its short `argsrepr`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from celery import Celery

from workers.task_display import argsrepr

SentJob = tuple[str, str, Mapping[str, Any], str]  # (job id, task name, job dict, queue)


def sent_event_fields(job_id: str, task_name: str, job: Mapping[str, Any],
                      queue: str) -> dict[str, Any]:
    """The fields Celery itself puts in a `task-sent` event."""
    return {
        "uuid": job_id, "root_id": job_id, "parent_id": None, "name": task_name,
        "args": f"({argsrepr(job)},)", "kwargs": "{}", "retries": 0, "eta": None,
        "expires": None, "queue": queue, "exchange": "", "routing_key": queue,
    }


def send_sent_events(app: Celery, jobs: Iterable[SentJob]) -> int:
    """Emit one `task-sent` event per job over one connection; returns how many were sent.

    A no-op (0) when `task_send_sent_event` is off in the app's configuration."""
    if not app.conf.task_send_sent_event:
        return 0
    sent = 0
    with app.connection_for_write() as connection, app.events.Dispatcher(connection) as events:
        for job_id, task_name, job, queue in jobs:
            events.send("task-sent", **sent_event_fields(job_id, task_name, job, queue))
            sent += 1
    return sent
