"""Revokes that outlive the workers alive when they were sent.

Celery keeps revoked ids in each worker's memory (`celery.worker.state.revoked`) and a
revoke broadcast reaches only the workers alive at that moment: a job revoked while queued
could be run later by a worker started after the broadcast (or after a restart) and end in
SUCCESS. So a revoke is also stored in the result backend's Redis, `workers.keys.revoked`,
until the job's result expires:

* producers (`producers.cancellation`) store it before they broadcast;
* every worker that hears a revoke broadcast (`celery control revoke`, Flower's Revoke and
  Terminate, `AsyncResult.revoke()`) stores it too (`install` wraps Celery's `revoke`
  control command), so it holds even if that worker dies before taking the job;
* before a job runs, `workers.delivery.result_store` checks the marker and the stored
  state in the same round trip as its dedupe check; a revoked job never runs and a stored
  REVOKED state is never overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker import control

from workers import keys

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 7 * 24 * 3600


def store(client: Any, job_ids: list[str], ttl_s: int) -> None:
    """Mark `job_ids` revoked for `ttl_s` seconds (the results' lifetime)."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.set(keys.revoked(job_id), 1, ex=ttl_s or DEFAULT_TTL_S)
    pipe.execute()


def install(on_heard: Callable[[], object] = lambda: None) -> None:
    """Wrap the worker's `revoke` control command so that what it hears is stored (once);
    `on_heard()` is called once Celery's revoked set has the ids (the cancel watcher's
    `wake`: a running job's cancel need not wait for its next poll)."""
    celery_revoke = control.Panel.data["revoke"]
    if getattr(celery_revoke, "lmq_stored", False):
        return

    def revoke(state: Any, task_id: Any, *args: Any, **kwargs: Any) -> Any:
        _store_heard(state, [task_id] if isinstance(task_id, str) else list(task_id))
        try:
            return celery_revoke(state, task_id, *args, **kwargs)
        finally:
            on_heard()

    revoke.lmq_stored = True  # type: ignore[attr-defined]
    control.Panel.data["revoke"] = revoke


def _store_heard(state: Any, job_ids: list[str]) -> None:
    backend = state.consumer.app.backend
    client = getattr(backend, "client", None)
    if client is None or not job_ids:
        return
    try:
        store(client, job_ids, int(backend.expires or 0))
    except Exception as exc:  # noqa: BLE001 - the in-memory revoke still applies here
        log.warning("revoke of %s not stored in Redis: %s", ", ".join(job_ids[:3]), exc)
