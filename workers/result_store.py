"""Delivery bookkeeping: redelivered jobs that already finished, and the attempt count.

A job may run more than once (a worker killed after storing its result but before the
acknowledgement, or a duplicate message with the same id). Two layers stop it running
twice on LM Studio:

1. Celery's `worker_deduplicate_successful_tasks` (on in `workers.celery`): a message that
   the broker marks as redelivered, whose id already has a SUCCESS result, is acknowledged
   without running the task.
2. `task_prerun` here (runs before Celery overwrites the state with STARTED): if the
   backend holds SUCCESS for the id, the stored result is kept, and the task returns it
   (`take_stored`) instead of predicting again. This also covers duplicates that are not
   flagged as redelivered.

Attempt: every start of a job increments `lmq:attempt:<job_id>` (expires with the result),
so `result.attempt` is 1 for the first run and counts redeliveries and retries after that.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from celery import Celery, states
from celery.signals import task_prerun

from workers.contract import KEY_PREFIX, TASK_NAMES

log = logging.getLogger(__name__)

_stored: dict[str, Any] = {}
_lock = threading.Lock()


def attempt_key(job_id: str) -> str:
    """Redis counter of how often a job started (an `lmq:` key; see workers.keys)."""
    return f"{KEY_PREFIX}attempt:{job_id}"


def next_attempt(client: redis.Redis | None, job_id: str, ttl_s: int) -> int:
    """Count this start of `job_id`; 1 on the first run (and when Redis is unavailable)."""
    if client is None:
        return 1
    try:
        pipe = client.pipeline(transaction=True)
        pipe.incr(attempt_key(job_id))
        pipe.expire(attempt_key(job_id), ttl_s)
        count, _ = pipe.execute()
        return int(count)
    except (redis.RedisError, OSError) as exc:
        log.warning("attempt counter of %s unavailable: %s", job_id, exc)
        return 1


def take_stored(job_id: str) -> dict[str, Any] | None:
    """The stored SUCCESS result of `job_id` found when this run started, if any."""
    with _lock:
        stored: dict[str, Any] | None = _stored.pop(job_id, None)
    return stored


def _remember_success(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task is None or task_id is None or task.name not in TASK_NAMES:
        return
    try:
        meta = task.backend.get_task_meta(task_id)
    except Exception as exc:  # noqa: BLE001 - a backend hiccup must not block the job
        log.warning("could not check for a stored result of %s: %s", task_id, exc)
        return
    if meta.get("status") == states.SUCCESS and isinstance(meta.get("result"), dict):
        log.info("job %s already finished: returning its stored result", task_id)
        with _lock:
            _stored[task_id] = meta["result"]


def connect(app: Celery) -> None:
    """Install the task_prerun check (idempotent)."""
    task_prerun.connect(_remember_success, weak=False, dispatch_uid="lmq-result-store")
