"""A SIGKILLed worker's job comes back within its lease, not after the visibility timeout.

Real worker processes, real Redis, the SDK against the simulator; the visibility timeout is
the default (4 h), so only `workers.delivery.redelivery` can bring the job back in time.
"""

from __future__ import annotations

import time

import pytest
import redis
from celery.result import AsyncResult

from tests.integration.test_worker_support import LLM, client_app, predict_channels, send, unacked
from tests.support.wait import wait_until
from workers import keys
from workers.contract import ChatJob, ChatResult

pytestmark = [pytest.mark.timeout(240)]

LEASE_S = 2.0
MARGIN_S = 20.0  # a worker's start-up is not in the lease; the machine may be busy


def _finished_channels(sim) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    return [c for c in predict_channels(sim)
            if c["stop_reason"] in ("eosFound", "maxPredictedTokensReached")]


def _slow_job_running(simulator, app):  # type: ignore[no-untyped-def]
    simulator.admin.set_timing(decode_tokens_per_s=30)
    simulator.admin.set_faults(reply_tokens=150)  # ~5 s
    handle = send(app, ChatJob(model=LLM, messages="survive a crash"))
    wait_until(lambda: any(c["fragments"] >= 3 for c in predict_channels(simulator)),
               timeout=60, message="job generating on the first worker")
    return handle


def _done_within(app, handle, timeout_s: float) -> ChatResult:  # type: ignore[no-untyped-def]
    wait_until(lambda: AsyncResult(handle.id, app=app).state == "SUCCESS", timeout=timeout_s,
               message="the killed worker's job finished elsewhere")
    return ChatResult.model_validate(AsyncResult(handle.id, app=app).result)


def test_killed_workers_job_completes_on_a_live_worker_within_the_lease(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    env = {**lmq_env, "LMQ_HOLD_LEASE_S": str(LEASE_S)}  # visibility timeout: default 4 h
    workers = [worker_factory(LLM, env) for _ in range(2)]
    app = client_app(redis_url)
    handle = _slow_job_running(simulator, app)
    client = redis.Redis.from_url(redis_url)
    holders = [w for w in workers if client.smembers(keys.held(w.hostname))]
    assert len(holders) == 1  # the worker running the job leases it
    victim = holders[0]
    survivor = next(w for w in workers if w is not victim)
    victim.kill()
    killed_at = time.monotonic()
    assert unacked(redis_url) == 1
    result = _done_within(app, handle, LEASE_S + MARGIN_S)
    assert time.monotonic() - killed_at < LEASE_S + MARGIN_S
    assert result.worker == survivor.hostname and result.attempt == 2
    assert len(_finished_channels(simulator)) == 1  # completed exactly once
    assert int(client.get(keys.attempt(handle.id)) or 0) == 2
    wait_until(lambda: unacked(redis_url) == 0, timeout=30, message="acked")
    wait_until(lambda: not client.exists(keys.held(victim.hostname)), timeout=30,
               message="the dead worker's held set dropped")
    assert "stopped renewing its lease" in survivor.log_tail(200)


def test_worker_restarted_alone_after_sigkill_recovers_its_own_job(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    env = {**lmq_env, "LMQ_HOLD_LEASE_S": "60"}  # a restart must not wait for the lease
    first = worker_factory(LLM, env)
    app = client_app(redis_url)
    handle = _slow_job_running(simulator, app)
    first.kill()
    again = worker_factory(LLM, env, name=first.name)
    result = _done_within(app, handle, MARGIN_S + 30)
    assert result.worker == first.hostname and result.attempt == 2
    assert len(_finished_channels(simulator)) == 1
    wait_until(lambda: unacked(redis_url) == 0, timeout=30, message="acked")
    assert "held by this worker's previous process" in again.log_tail(200)


def test_live_workers_jobs_are_left_alone(worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    env = {**lmq_env, "LMQ_HOLD_LEASE_S": str(LEASE_S)}
    first = worker_factory(LLM, env)
    app = client_app(redis_url)
    simulator.admin.set_timing(decode_tokens_per_s=10)
    simulator.admin.set_faults(reply_tokens=60)  # ~6 s: several leases long
    handle = send(app, ChatJob(model=LLM, messages="a long one"))
    second = worker_factory(LLM, env)
    result = ChatResult.model_validate(handle.get(timeout=90))
    assert result.worker == first.hostname and result.attempt == 1
    assert len(predict_channels(simulator)) == 1  # never restored while its worker lived
    assert "stopped renewing" not in second.log_tail(200)


def test_a_finished_jobs_tag_leaves_the_held_set_with_its_ack(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    """Not at the next heartbeat (every 15 s with this lease): acknowledged with its result
    (a success) or by Celery's ack (a failure), the tag leaves the held set in that write."""
    env = {**lmq_env, "LMQ_HOLD_LEASE_S": "60", "LMQ_MAX_PROMPT_CHARS": "200"}
    worker = worker_factory(LLM, env)
    app = client_app(redis_url)
    client = redis.Redis.from_url(redis_url)
    held = keys.held(worker.hostname)
    simulator.admin.set_timing(decode_tokens_per_s=20)
    simulator.admin.set_faults(reply_tokens=40)  # ~2 s: seen held while it runs
    handle = send(app, ChatJob(model=LLM, messages="held while it runs"))
    wait_until(lambda: client.scard(held) == 1, timeout=30, message="the running job held")
    ChatResult.model_validate(handle.get(timeout=60))
    assert client.scard(held) == 0  # gone in the round trip that stored the result
    failing = send(app, ChatJob(model=LLM, messages="x" * 500))  # over LMQ_MAX_PROMPT_CHARS
    with pytest.raises(Exception, match="LMQ_MAX_PROMPT_CHARS"):
        failing.get(timeout=60)
    wait_until(lambda: unacked(redis_url) == 0 and client.scard(held) == 0, timeout=5,
               message="the failed job acknowledged and out of the held set")
