"""Timeouts: LM Studio slower than the SDK timeout; a job longer than the visibility timeout.

* SDK timeout (LMQ_SDK_TIMEOUT_S): the design maps the SDK's timeout to
  LMStudioUnavailableError, a transient error: the job is retried LMQ_JOB_MAX_RETRIES times,
  then ends FAILURE with that error saying no message came in time. The worker keeps
  serving.
* Visibility timeout (LMQ_VISIBILITY_TIMEOUT_S): Redis redelivers an unacknowledged job
  only when a consumer sweeps the unacked set (once a minute: unacked_restore_interval in
  workers/celery_config.py; a live worker's jobs are also leased, workers/delivery/redelivery.py).
  A job 3.5x longer than the visibility timeout runs once: asserted from the simulator's
  log (predictions of the job's prompt). The slow_extended variant runs a job longer than
  the sweep period: it runs once too, since the sweep skips jobs a live worker holds
  (kombu's own sweep queued it again at every sweep: attempts 1, 2 and 4 stored results).
"""

from __future__ import annotations

import pytest

from tests.faults.support import LLM, assert_each_once, wait_finished
from workers.error import LMStudioUnavailableError

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def predictions_of(simulator, prompt: str) -> int:  # type: ignore[no-untyped-def]
    count = 0
    for entry in simulator.admin.log(type="channelCreate"):
        history = entry["msg"].get("creationParameter", {}).get("history", {})
        texts = [part.get("text", "") for message in history.get("messages", [])
                 for part in message.get("content", [])]
        count += prompt in texts
    return count


def test_lm_studio_slower_than_sdk_timeout_fails_clearly(worker_factory, lmq_env, queue, tap,
                                                         simulator):  # type: ignore[no-untyped-def]
    env = {**lmq_env, "LMQ_SDK_TIMEOUT_S": "1", "LMQ_JOB_MAX_RETRIES": "1",
           "LMQ_JOB_RETRY_BACKOFF_S": "0.1"}
    worker = worker_factory(LLM, env)
    simulator.admin.set_faults(delay_s=3.0, delay_endpoints=["predict"])
    slow = queue.chat(LLM, "too slow", config={"max_tokens": 5})
    found = wait_finished(queue, [slow.id], timeout=120)
    assert_each_once(found, tap, errors=(LMStudioUnavailableError,))
    state, error = found[slow.id]
    assert state == "FAILURE" and "in time" in str(error) and "after 1 retries" in str(error)
    assert predictions_of(simulator, "too slow") == 2  # the try and one retry
    simulator.admin.clear_faults()
    assert queue.chat(LLM, "fast again", config={"max_tokens": 4}).result(60)
    assert worker.is_running()


def test_job_longer_than_visibility_timeout_runs_once(worker_factory, lmq_env, queue, tap,
                                                      simulator):  # type: ignore[no-untyped-def]
    runs, attempt = long_job(7.0, worker_factory, lmq_env, queue, tap, simulator)
    assert (runs, attempt) == (1, 1)  # no second run: the sweep did not come round


@pytest.mark.slow_extended
@pytest.mark.timeout(600)
def test_job_longer_than_restore_sweep_caller_sees_one_result(
        worker_factory, lmq_env, queue, tap, simulator):  # type: ignore[no-untyped-def]
    runs, attempt = long_job(130.0, worker_factory, lmq_env, queue, tap, simulator)
    assert (runs, attempt) == (1, 1)  # the sweeps skipped it: a live worker held it


def long_job(seconds: float, worker_factory, lmq_env, queue, tap,
             simulator) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    env = {**lmq_env, "LMQ_VISIBILITY_TIMEOUT_S": "2", "LMQ_CONCURRENCY": "2"}
    worker_factory(LLM, env)
    worker_factory(LLM, env)
    simulator.admin.set_timing(decode_tokens_per_s=10)
    tokens = int(seconds * 10)
    simulator.admin.set_faults(reply_tokens=tokens)
    long = queue.chat(LLM, "longer than visibility", config={"max_tokens": tokens})
    found = wait_finished(queue, [long.id], timeout=seconds + 170)
    assert assert_each_once(found, tap) == {"SUCCESS": 1}
    result = found[long.id][1]
    assert result["stats"]["predicted_tokens_count"] == tokens
    runs = predictions_of(simulator, "longer than visibility")
    published = tap.distinct_results(long.id)
    print(f"predictions: {runs}; attempt {result['attempt']}; distinct results {len(published)}")
    assert len(published) == 1
    return runs, int(result["attempt"])
