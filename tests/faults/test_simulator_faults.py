"""LM Studio (the simulator) restarted mid-run, and dropping connections at random.

What the design says: a dropped socket is a transient error; the worker reconnects the
namespace and retries the job (bounded, LMQ_JOB_MAX_RETRIES), so jobs end with their
result, or, if LM Studio stays away longer than the retries, with a clear
LMStudioUnavailableError. Never lost, never two outcomes.
"""

from __future__ import annotations

import pytest

from tests.faults.support import LLM, assert_each_once, broker_drained, wait_finished
from tests.support.wait import wait_until
from workers.error import LMStudioUnavailableError

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]


def submit(queue, n: int, tag: str) -> list[str]:  # type: ignore[no-untyped-def]
    handles = queue.submit_many([{"model": LLM, "messages": f"{tag} {i}",
                                  "config": {"max_tokens": 30}} for i in range(n)])
    return [h.id for h in handles]


def test_simulator_restarted_mid_run(worker_factory, lmq_env, queue, tap, simulator):  # type: ignore[no-untyped-def]
    env = {**lmq_env, "LMQ_JOB_RETRY_BACKOFF_S": "0.5", "LMQ_JOB_MAX_RETRIES": "4"}
    worker = worker_factory(LLM, env)
    simulator.admin.set_timing(decode_tokens_per_s=100)
    ids = submit(queue, 40, "restart")
    wait_until(lambda: sum(s == "SUCCESS" for s, _ in queue.fetch_results(ids).values()) >= 8,
               timeout=120, message="some jobs done before the restart")
    simulator.admin.restart(down_s=1.0)  # closes every socket mid-prediction
    found = wait_finished(queue, ids, timeout=240)
    counts = assert_each_once(found, tap, errors=(LMStudioUnavailableError,))
    assert counts.get("SUCCESS", 0) == 40, counts  # 1 s down < the retries' backoff
    assert worker.is_running()
    assert broker_drained(queue.settings.broker_url)


def test_simulator_drops_connections_at_random(worker_factory, lmq_env, queue, tap,
                                               simulator):  # type: ignore[no-untyped-def]
    env = {**lmq_env, "LMQ_JOB_RETRY_BACKOFF_S": "0.1", "LMQ_JOB_MAX_RETRIES": "3"}
    worker = worker_factory(LLM, env)
    ids = []
    for drop_after, times in ((3, 2), (11, 1), (1, 3), (7, 2)):
        simulator.admin.set_faults(drop_after_fragments=drop_after, drop_times=times,
                                   reply_tokens=30)
        ids += submit(queue, 15, f"drop {drop_after}")
        wait_until(lambda: simulator.admin.faults().get("drop_times") in (0, None),
                   timeout=120, message="the drops to happen")
    found = wait_finished(queue, ids, timeout=240)
    counts = assert_each_once(found, tap, errors=(LMStudioUnavailableError,))
    assert counts.get("SUCCESS", 0) >= 55, counts
    assert worker.is_running()
    assert simulator.admin.log(type="connectionDropped")  # the faults really fired
