"""Where is my job (issue 20 item 4): `JobHandle.position()` and `lmq status ID` give the jobs
ahead (by priority, then age) and an estimated start; `lmq workers` and the metrics show the
waiting jobs per model and priority.

Real Redis and the real CLI; jobs wait because no worker serves the model while they are
counted, and a real worker first finishes a few jobs so the model has a recent rate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from producers import JobQueue
from tests.integration.corpus_support import lmq
from tests.integration.test_worker_support import LLM
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
