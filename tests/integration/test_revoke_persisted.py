"""A job revoked while it waits never runs, even on workers started after the revoke (issue 20
item 5): the revoke is stored in Redis until the result expires (`workers.delivery.revoke_store`).

Real workers, real Redis, the SDK against the simulator. The worker runs one job at a time
(LMQ_CONCURRENCY=1), so the second job waits in the queue behind a slow first one; it is
revoked, then every worker is SIGKILLed and started again (fresh memory, so Celery's
in-memory revoked set is gone). Predictions are counted at the simulator by the job's prompt.
"""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from celery.result import AsyncResult

from producers.cancellation import revoke
from tests.integration.test_worker_support import (
    LLM,
    client_app,
    predict_channels,
    send,
    state_of,
    unacked,
)
from tests.support.wait import wait_until
from workers import keys
from workers.contract import ChatJob, queue_name

pytestmark = [pytest.mark.timeout(240)]


def _predictions_of(simulator, marker: str) -> int:  # type: ignore[no-untyped-def]
    """Predict channels the simulator opened whose request carries `marker`."""
    return sum(marker in json.dumps(entry["msg"])
               for entry in simulator.admin.log(type="channelCreate"))


def _backlog(simulator, app, redis_url):  # type: ignore[no-untyped-def]
    """A slow job running on the one thread, a second one waiting in the queue."""
    simulator.admin.set_timing(decode_tokens_per_s=30)
    simulator.admin.set_faults(reply_tokens=90)  # ~3 s
    first = send(app, ChatJob(model=LLM, messages="keep the worker busy"))
    wait_until(lambda: any(c["fragments"] >= 2 for c in predict_channels(simulator)),
               timeout=60, message="the first job generating")
    marker = f"never-run-{uuid.uuid4().hex[:8]}"
    waiting = send(app, ChatJob(model=LLM, messages=marker))
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: client.llen(queue_name(LLM)) == 1, timeout=10,
               message="the second job waiting in the queue")
    return first, waiting, marker


def _restart_and_drain(worker_factory, env, workers, app, redis_url, first):  # type: ignore[no-untyped-def]
    for worker in workers:
        worker.kill()
    again = [worker_factory(LLM, env, name=worker.name) for worker in workers]
    wait_until(lambda: state_of(app, first.id) == "SUCCESS", timeout=90,
               message="the first job run again after the restart")
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: client.llen(queue_name(LLM)) == 0 and unacked(redis_url) == 0,
               timeout=60, message="the queue drained and every job acknowledged")
    return again


def test_job_revoked_while_queued_never_runs_after_every_worker_restarts(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    env = {**lmq_env, "LMQ_CONCURRENCY": "1", "LMQ_HOLD_LEASE_S": "60"}
    workers = [worker_factory(LLM, env)]
    app = client_app(redis_url)
    first, waiting, marker = _backlog(simulator, app, redis_url)
    revoke(app, [waiting.id])  # the producers' cancel path (JobQueue.cancel, lmq cancel)
    _restart_and_drain(worker_factory, env, workers, app, redis_url, first)
    assert _predictions_of(simulator, marker) == 0
    assert state_of(app, waiting.id) == "REVOKED"
    assert "before it started" in str(AsyncResult(waiting.id, app=app).result)


def test_revoke_heard_by_a_worker_that_then_dies_still_holds(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    """`celery control revoke` / Flower's Revoke store nothing themselves: the worker that
    hears the broadcast stores it before the worker is killed."""
    env = {**lmq_env, "LMQ_CONCURRENCY": "1", "LMQ_HOLD_LEASE_S": "60"}
    workers = [worker_factory(LLM, env)]
    app = client_app(redis_url)
    first, waiting, marker = _backlog(simulator, app, redis_url)
    client = redis.Redis.from_url(redis_url)
    app.control.revoke(waiting.id)  # a plain Celery revoke, as Flower sends it
    wait_until(lambda: client.exists(keys.revoked(waiting.id)), timeout=10,
               message="the live worker stored the revoke it heard")
    assert 0 < client.ttl(keys.revoked(waiting.id)) <= 7 * 24 * 3600
    _restart_and_drain(worker_factory, env, workers, app, redis_url, first)
    assert _predictions_of(simulator, marker) == 0
    assert state_of(app, waiting.id) == "REVOKED"


def test_a_stored_revoked_state_is_never_overwritten(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    """A job marked REVOKED in the backend (as a bulk cancel marks the jobs it takes out of
    a queue) whose message still reaches a worker keeps its REVOKED state and reason."""
    app = client_app(redis_url)
    marker = f"never-run-{uuid.uuid4().hex[:8]}"
    job_id = str(uuid.uuid4())
    app.backend.mark_as_revoked(job_id, reason="cancelled while queued")
    send(app, ChatJob(model=LLM, messages=marker), task_id=job_id)
    worker_factory(LLM, lmq_env)
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: client.llen(queue_name(LLM)) == 0 and unacked(redis_url) == 0,
               timeout=60, message="the job's message taken and acknowledged")
    assert _predictions_of(simulator, marker) == 0
    assert state_of(app, job_id) == "REVOKED"
    assert "cancelled while queued" in str(AsyncResult(job_id, app=app).result)
