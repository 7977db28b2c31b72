"""Cancel jobs: one by id, every job of a model, or every job of a batch.

Every cancel is a Celery revoke (with terminate=True, so it also works where a terminate
is needed); the worker maps any revoke of a running job to a prediction cancel and stores
REVOKED with the partial result. Jobs still waiting in a model's queue are taken out of it
and marked REVOKED here, so they are cancelled even when no worker is alive.

A revoke is also stored in Redis (`workers.keys.revoked`, next to the job's result and
expiring with it) before it is broadcast: Celery's revoked set lives in each worker's
memory, so a worker that starts after the broadcast would otherwise run the job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

import redis
from celery import Celery, states

from producers import job_registry
from producers.outcome import FINISHED_STATES
from producers.served_models import fresh_inspector
from workers import keys, waiting


class CancelOutcome(StrEnum):
    REVOKED = "revoked"
    ALREADY_FINISHED = "already finished"
    UNKNOWN = "unknown"


@dataclass
class BulkCancel:
    """What a bulk cancel did: revoked ids, and ids that had already finished."""

    revoked: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    taken_from_queue: list[str] = field(default_factory=list)  # never reached a worker


def revoke(app: Celery, job_ids: list[str]) -> None:
    for start in range(0, len(job_ids), 1000):
        chunk = job_ids[start : start + 1000]
        store_revokes(app, chunk)  # first: a worker starting meanwhile must see it
        app.control.revoke(chunk, terminate=True)


def store_revokes(app: Celery, job_ids: list[str]) -> None:
    """Mark the jobs revoked in the result backend's Redis until their results expire."""
    client = getattr(app.backend, "client", None)
    if client is None or not job_ids:  # not a Redis backend: the broadcast is all there is
        return
    ttl_s = int(getattr(app.backend, "expires", None) or 7 * 24 * 3600)
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.set(keys.revoked(job_id), 1, ex=ttl_s)
    pipe.execute()


def cancel_job(app: Celery, store: redis.Redis, job_id: str) -> CancelOutcome:
    state = app.backend.get_state(job_id)
    if state in FINISHED_STATES:
        return CancelOutcome.ALREADY_FINISHED
    if state == states.PENDING and job_registry.lookup(store, job_id) is None:
        return CancelOutcome.UNKNOWN
    revoke(app, [job_id])
    return CancelOutcome.REVOKED


def take_queued(app: Celery, broker: redis.Redis, model: str) -> list[str]:
    """Remove the model's waiting messages from its queue and mark their jobs REVOKED."""
    taken: list[str] = []
    for key in waiting.all_lists(broker, model):  # every priority and tenant list
        for raw in broker.lrange(key, 0, -1):
            job_id = json.loads(raw).get("headers", {}).get("id")
            if job_id and broker.lrem(key, 1, raw):  # 0: a worker took it meanwhile
                app.backend.mark_as_revoked(job_id, reason="cancelled while queued")
                taken.append(job_id)
    return taken


def running_on(app: Celery, workers: list[str], reply_timeout_s: float = 1.0) -> list[str]:
    """Ids of the jobs the given workers run or hold reserved."""
    if not workers:
        return []
    ids: list[str] = []
    with fresh_inspector(app, destination=workers, timeout=reply_timeout_s) as inspector:
        for replies in (inspector.active(), inspector.reserved()):
            for requests in (replies or {}).values():
                ids += [request["id"] for request in requests or [] if request.get("id")]
    return ids


def cancel_model(app: Celery, broker: redis.Redis | None, model: str,
                 workers: list[str]) -> BulkCancel:
    queued = take_queued(app, broker, model) if broker is not None else []
    running = running_on(app, workers)
    revoke(app, queued + running)
    return BulkCancel(revoked=queued + running, taken_from_queue=queued)


def cancel_batch(app: Celery, store: redis.Redis, batch_id: str) -> BulkCancel | None:
    """Revoke every unfinished job of a batch; None if the batch is unknown."""
    job_ids = [raw.decode() for raw in store.lrange(keys.batch_jobs(batch_id), 0, -1)]
    if not job_ids:
        return None
    outcome = BulkCancel()
    for job_id, state in zip(job_ids, job_states(app, job_ids), strict=True):
        (outcome.finished if state in FINISHED_STATES else outcome.revoked).append(job_id)
    revoke(app, outcome.revoked)
    return outcome


def job_states(app: Celery, job_ids: list[str]) -> list[str]:
    """States of many jobs in one MGET per 1000 (PENDING when nothing is stored)."""
    found: list[str] = []
    client = app.backend.client
    for start in range(0, len(job_ids), 1000):
        chunk = job_ids[start : start + 1000]
        raws = client.mget([app.backend.get_key_for_task(job_id) for job_id in chunk])
        for raw in raws:
            found.append(json.loads(raw)["status"] if raw else states.PENDING)
    return found
