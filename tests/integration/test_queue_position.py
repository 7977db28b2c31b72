"""Where is my job (issue 20 item 4): `JobHandle.position()` and `lmq status ID` give the jobs
ahead (by priority, then the tenants' fair share, then age) and an estimated start; `lmq
workers` and the metrics show the waiting jobs per model and priority.

Real Redis and the real CLI; jobs wait because no worker serves the model while they are
counted (or its one worker runs a long job), and a real worker first finishes a few jobs so
the model has a recent rate, or then takes the counted jobs in the order it does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from producers import JobQueue
from producers.job_handle import JobHandle
from tests.integration.corpus_support import lmq
from tests.integration.test_priority import FAST, _start_order, _waiting
from tests.integration.test_worker_support import LLM, predict_channels
from tests.support.wait import wait_until
from workers.metrics import read_model_metrics
from workers.settings import Settings

pytestmark = [pytest.mark.timeout(240)]


@pytest.fixture()
def queue(redis_url: str) -> Iterator[JobQueue]:
    with JobQueue(Settings(broker_url=redis_url, result_backend=redis_url)) as started:
        yield started


def _submit(queue: JobQueue, priority: str, text: str):  # type: ignore[no-untyped-def]
    return queue.chat(LLM, text, priority=priority, enqueue_anyway=True)


def test_position_counts_the_jobs_ahead_by_priority_then_age(
        worker_factory, lmq_env, redis_url, queue):  # type: ignore[no-untyped-def]
    worker = worker_factory(LLM, lmq_env)
    for n in range(3):  # a recent rate for the estimate
        queue.chat(LLM, f"warm {n}", config={"maxTokens": 2}).result(timeout=60)
    worker.stop()
    first_low = _submit(queue, "low", "low 1")
    normal = _submit(queue, "normal", "normal 1")
    second_low = _submit(queue, "low", "low 2")
    high = _submit(queue, "high", "high 1")
    assert high.position().ahead == 0
    assert normal.position().ahead == 1
    assert first_low.position().ahead == 2
    place = second_low.position()
    assert (place.priority, place.ahead) == ("low", 3)
    assert place.estimated_start_s is not None and place.estimated_start_s > 0
    env = {key: value for key, value in lmq_env.items() if key != "LMQ_MODEL"}
    shown = json.loads(lmq("status", second_low.id, "--json", env=env).stdout)
    assert shown["state"] == "PENDING"
    assert shown["position"]["ahead"] == 3 and shown["position"]["priority"] == "low"
    assert "3 job(s) ahead" in lmq("status", second_low.id, env=env).stdout
    figures = read_model_metrics(redis_url)[LLM]
    assert figures["queued_by_priority"] == {"high": 1, "normal": 1, "low": 2}
    assert " 1/1/2 " in lmq("workers", env=env).stdout


def test_a_finished_job_has_no_position(worker_factory, lmq_env, queue):  # type: ignore[no-untyped-def]
    worker_factory(LLM, lmq_env)
    handle = queue.chat(LLM, "done soon", config={"maxTokens": 2})
    handle.result(timeout=60)
    assert handle.position() is None


def test_position_follows_the_fair_share_the_worker_then_takes_by(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    """Tenant `big` runs a long job and has two high jobs waiting (its usage: 1, then 3 by
    the time its normal jobs compete); `small` has none. Each waiting job's position is then
    its place in the order the worker (one job at a time) starts them: small's three normal
    jobs before big's, so small2 has 4 ahead. Exact turns (the position before) said 6:
    big's high two, small's own two, and two of big's normal turns."""
    worker_factory(LLM, {**lmq_env, "LMQ_CONCURRENCY": "1"})
    simulator.admin.set_timing(decode_tokens_per_s=30)
    simulator.admin.set_faults(reply_tokens=30 * 60)  # a minute: cancelled below
    blocker = queue.chat(LLM, "big's long job", tenant="big", enqueue_anyway=True)
    wait_until(lambda: any(c["fragments"] >= 2 for c in predict_channels(simulator)),
               timeout=60, message="big's long job generating")
    handles: dict[str, JobHandle] = {}
    for name, tenant, priority in [("big0", "big", "normal"), ("big1", "big", "normal"),
                                   ("big2", "big", "normal"), ("small0", "small", "normal"),
                                   ("small1", "small", "normal"), ("small2", "small", "normal"),
                                   ("big-high0", "big", "high"), ("big-high1", "big", "high")]:
        handles[name] = queue.chat(LLM, name, config=FAST, tenant=tenant, priority=priority,
                                   enqueue_anyway=True)
    _waiting(redis_url, 8)
    ahead = {name: handle.position().ahead for name, handle in handles.items()}  # type: ignore[union-attr]
    assert ahead["small2"] == 4
    simulator.admin.clear_faults()
    queue.cancel(blocker.id)
    order = _start_order(handles)
    assert order == ["big-high0", "big-high1", "small0", "small1", "small2",
                     "big0", "big1", "big2"]
    assert [ahead[name] for name in order] == list(range(8)), ahead
