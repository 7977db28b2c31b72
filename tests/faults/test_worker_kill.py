"""Workers killed with SIGKILL at random points of a run; a replacement starts each time.

A killed worker's unacknowledged jobs come back after LMQ_HOLD_LEASE_S (workers.redelivery;
8 s by default) and run on another worker. The visibility timeout stays well above the
longest job (60 s): with it at 4 s, a job slowed past 4 s on this shared machine was
redelivered while it still ran and both runs published a different SUCCESS. Every job must end
exactly once with its result; no caller may see two different results.
"""

from __future__ import annotations

import random

import pytest

from tests.faults.support import (
    LLM,
    assert_each_once,
    broker_drained,
    broker_picture,
    wait_finished,
)
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(600)]


def run_with_kills(jobs: int, kills: int, seed: int, worker_factory, lmq_env, queue, tap,
                   timeout: float) -> None:  # type: ignore[no-untyped-def]
    env = {**lmq_env, "LMQ_VISIBILITY_TIMEOUT_S": "60", "LMQ_CONCURRENCY": "4"}
    workers = [worker_factory(LLM, env), worker_factory(LLM, env)]
    rng = random.Random(seed)
    handles = queue.submit_many([{"model": LLM, "messages": f"kill test {i}",
                                  "config": {"max_tokens": 24}} for i in range(jobs)])
    ids = [h.id for h in handles]
    marks = sorted(rng.sample(range(jobs // 10, jobs * 8 // 10), kills))
    for mark in marks:  # kill when `mark` jobs are done: a random point mid-run
        wait_until(lambda m=mark: _done(queue, ids) >= m, timeout=timeout,
                   message=f"{mark} jobs done before a kill")
        victim = workers.pop(rng.randrange(len(workers)))
        victim.kill()
        workers.append(worker_factory(LLM, env, wait_ready=False))
    try:
        found = wait_finished(queue, ids, timeout=timeout)
    except AssertionError as exc:
        missing = [i for i, (state, _) in queue.fetch_results(ids).items() if state != "SUCCESS"]
        raise AssertionError(f"{exc}; lost jobs on the broker: "
                             f"{broker_picture(queue.settings.broker_url, missing)}") from None
    counts = assert_each_once(found, tap)
    assert counts == {"SUCCESS": jobs}, counts
    wait_until(lambda: broker_drained(queue.settings.broker_url), timeout=60,
               message="queue empty and nothing unacknowledged")
    # The kills hit running jobs: some ran again on another worker, yet ended once.
    assert max(r["attempt"] for _, (_, r) in found.items()) >= 2


def _done(queue, ids: list[str]) -> int:  # type: ignore[no-untyped-def]
    states = queue.fetch_results(ids)
    return sum(1 for state, _ in states.values() if state == "SUCCESS")


@pytest.mark.slow
def test_sigkill_during_150_jobs_every_job_once(worker_factory, lmq_env, queue, tap,
                                                simulator):  # type: ignore[no-untyped-def]
    simulator.admin.set_timing(decode_tokens_per_s=400)
    run_with_kills(150, 3, seed=11, worker_factory=worker_factory, lmq_env=lmq_env,
                   queue=queue, tap=tap, timeout=240)


@pytest.mark.slow_extended
def test_sigkill_during_1000_jobs_every_job_once(worker_factory, lmq_env, queue, tap,
                                                 simulator):  # type: ignore[no-untyped-def]
    simulator.admin.set_timing(decode_tokens_per_s=1000)
    run_with_kills(1000, 8, seed=7, worker_factory=worker_factory, lmq_env=lmq_env,
                   queue=queue, tap=tap, timeout=900)
