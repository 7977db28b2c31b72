"""Deadlines (issue 20 item 3): `expires_s` (a job not started in time never runs and fails
with JobExpiredError) and `time_limit_s` (a running prediction is cancelled at the limit:
REVOKED with its partial result and the reason).

Real worker processes, real Redis, the SDK against the simulator; predictions are counted
at the simulator by the job's prompt.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from producers import JobCancelledError, JobExpiredError, JobQueue
from tests.integration.corpus_support import lmq
from tests.integration.test_worker_support import LLM, predict_channels
from tests.support.wait import wait_until
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
    with pytest.raises(JobExpiredError, match="expires_s of 1s") as caught:
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
