"""Deadlines (issue 20 item 3): `expires_s` (a job not started in time never runs and fails
with JobExpiredError) and `time_limit_s` (a running prediction is cancelled at the limit:
REVOKED with its partial result and the reason).

Real worker processes, real Redis, the SDK against the simulator; predictions are counted
at the simulator by the job's prompt.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from producers import JobCancelledError, JobExpiredError, JobQueue, job_expiry
from tests.integration.corpus_support import lmq
from tests.integration.test_worker_support import LLM, predict_channels, unacked
from tests.support.wait import wait_until
from workers import keys
from workers.contract import queue_name
from workers.settings import Settings

pytestmark = [pytest.mark.timeout(240)]


@pytest.fixture()
def queue(redis_url: str) -> Iterator[JobQueue]:
    with JobQueue(Settings(broker_url=redis_url, result_backend=redis_url)) as started:
        yield started


def _predictions_of(simulator, marker: str) -> int:  # type: ignore[no-untyped-def]
    return sum(marker in json.dumps(entry["msg"])
               for entry in simulator.admin.log(type="channelCreate"))


def test_a_job_not_started_within_expires_s_never_runs(
        worker_factory, lmq_env, simulator, queue):  # type: ignore[no-untyped-def]
    worker_factory(LLM, {**lmq_env, "LMQ_CONCURRENCY": "1"})
    simulator.admin.set_timing(decode_tokens_per_s=30)
    simulator.admin.set_faults(reply_tokens=1800)  # a minute: it holds the only thread
    blocker = queue.chat(LLM, "keep the worker busy", enqueue_anyway=True)
    wait_until(lambda: any(c["fragments"] >= 2 for c in predict_channels(simulator)),
               timeout=60, message="the first job generating")
    marker = f"expires-{uuid.uuid4().hex[:8]}"
    late = queue.chat(LLM, marker, expires_s=1, enqueue_anyway=True)
    patient = queue.chat(LLM, "patient", config={"maxTokens": 2}, expires_s=600,
                         enqueue_anyway=True)
    submitted = time.time()
    wait_until(lambda: time.time() - submitted > 1.5, timeout=10,
               message="the short deadline passed while the job waited")
    simulator.admin.clear_faults()
    queue.cancel(blocker.id)
    # Its waiter ends it here (or the worker, if it takes the job first): either way
    with pytest.raises(JobExpiredError, match="not started within its expires_s") as caught:
        late.result(timeout=60)
    assert "never ran" in str(caught.value)
    assert late.status() == "FAILURE"
    assert _predictions_of(simulator, marker) == 0
    assert patient.result(timeout=60).content  # within its deadline: it ran


def test_a_running_job_is_cancelled_at_its_time_limit(
        worker_factory, lmq_env, simulator, queue):  # type: ignore[no-untyped-def]
    worker_factory(LLM, lmq_env)
    simulator.admin.set_timing(decode_tokens_per_s=20)
    simulator.admin.set_faults(reply_tokens=2000)  # 100 s without the limit
    handle = queue.chat(LLM, "a long story", time_limit_s=2, enqueue_anyway=True)
    with pytest.raises(JobCancelledError, match=r"time limit of 2s reached") as caught:
        handle.result(timeout=60)
    partial = caught.value.partial
    assert partial is not None and partial["content"]
    assert partial["stats"]["stop_reason"] == "userStopped"
    assert handle.status() == "REVOKED"
    simulator.admin.clear_faults()


def test_cli_deadline_options_are_checked(lmq_env):  # type: ignore[no-untyped-def]
    env = {key: value for key, value in lmq_env.items() if key != "LMQ_MODEL"}
    refused = lmq("chat", LLM, "x", "--expires", "0", "--no-wait", env=env, check=False)
    assert refused.returncode == 2 and "--expires" in refused.stderr
    refused = lmq("batch", "submit", __file__, "--completion-window", "tomorrow", env=env,
                  check=False)
    assert refused.returncode == 2 and "use hours or minutes" in refused.stderr


def _drained(redis_url: str) -> bool:
    """Every message taken off the model's queue and acknowledged."""
    client = redis.Redis.from_url(redis_url)
    return client.llen(queue_name(LLM)) == 0 and unacked(redis_url) == 0


def test_a_job_no_worker_takes_ends_expired_when_waited_on_and_never_runs_later(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    """No worker alive: a wait on a job past its expires_s ends it (result, aresult, lmq
    status), and the worker started afterwards never runs it nor changes its state."""
    marker = f"unstarted-{uuid.uuid4().hex[:8]}"
    waited, awaited, polled = (queue.chat(LLM, f"{marker} {n}", expires_s=1,
                                          enqueue_anyway=True) for n in range(3))
    started = time.monotonic()
    with pytest.raises(JobExpiredError, match="no worker had taken it"):
        waited.result(timeout=30)
    assert time.monotonic() - started < 3  # promptly after the 1 s deadline, not at timeout
    with pytest.raises(JobExpiredError, match="never ran"):
        asyncio.run(queue.handle(awaited.id).aresult(timeout=30))  # looked up by id
    shown = json.loads(lmq("status", polled.id, "--json", env=lmq_env).stdout)
    assert shown["state"] == "FAILURE"
    worker_factory(LLM, lmq_env)
    after = queue.chat(LLM, "submitted after the worker started", config={"maxTokens": 2})
    assert after.result(timeout=60).content  # the worker runs jobs; these it refused
    wait_until(lambda: _drained(redis_url), timeout=60,
               message="the expired jobs' messages taken and acknowledged")
    assert _predictions_of(simulator, marker) == 0
    for handle in (waited, awaited, polled):
        assert handle.status() == "FAILURE"
        with pytest.raises(JobExpiredError, match="no worker had taken it"):
            handle.result(timeout=5)


def test_a_job_expired_by_its_waiter_is_not_run_by_a_worker_whose_clock_says_otherwise(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    """The waiter's decision holds even if the worker taking the job at that moment thinks
    it is still in time (another host's clock): the stored revoke marker and the FAILURE
    written with it in one step are what the worker's start script sees."""
    marker = f"decided-{uuid.uuid4().hex[:8]}"
    handle = queue.chat(LLM, marker, expires_s=600, enqueue_anyway=True)
    backend = redis.Redis.from_url(redis_url)
    meta = job_expiry.expire_unstarted(queue.app, backend, handle.id, deadline=time.time())
    assert meta is not None and meta["status"] == "FAILURE"
    assert backend.exists(keys.revoked(handle.id))
    worker_factory(LLM, lmq_env)
    wait_until(lambda: _drained(redis_url), timeout=60,
               message="the job's message taken and acknowledged")
    assert _predictions_of(simulator, marker) == 0
    assert handle.status() == "FAILURE"
    with pytest.raises(JobExpiredError):
        handle.result(timeout=5)


def test_a_job_a_worker_started_is_not_expired_by_its_waiter(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    """The other order of the race: once a worker started the job, a waiter past the
    deadline writes nothing, and the job ends as it runs."""
    worker_factory(LLM, lmq_env)
    simulator.admin.set_timing(decode_tokens_per_s=30)
    simulator.admin.set_faults(reply_tokens=60)  # ~2 s
    handle = queue.chat(LLM, "running past its deadline", expires_s=600, enqueue_anyway=True)
    wait_until(lambda: handle.status() in ("STARTED", "PROGRESS"), timeout=60,
               message="the worker started the job")
    backend = redis.Redis.from_url(redis_url)
    meta = job_expiry.expire_unstarted(queue.app, backend, handle.id, deadline=time.time())
    assert meta is not None and meta["status"] in ("STARTED", "PROGRESS")
    assert not backend.exists(keys.revoked(handle.id))
    assert handle.result(timeout=60).content
    simulator.admin.clear_faults()
