"""Redis restarted mid-run: with persistence (appendonly) nothing is lost; without it,
what Redis held (queued jobs, results) is gone.

Documented behaviour without persistence (README, "Delivery semantics"): a job queued when
Redis restarts is lost — it never runs and its handle's `result(timeout)` raises
JobTimeoutError (state PENDING); results stored before the restart are lost too. Jobs
running during the restart finish and store their result in the new, empty Redis. Workers
and producers reconnect by themselves. Use `appendonly yes` for the broker's Redis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from producers.cancellation import running_on
from producers.redis_server import RedisServer
from tests.faults.support import (
    LLM,
    ResultTap,
    assert_each_once,
    broker_drained,
    job_queue,
    wait_finished,
)
from tests.support.services import start_redis
from tests.support.wait import wait_until
from workers.error import JobFailedError, JobTimeoutError, ModelNotServedError

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]


@pytest.fixture(params=[True, False], ids=["appendonly", "no-persistence"])
def own_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    server = start_redis(appendonly=request.param)
    yield server
    server.stop()


def _successes(queue, ids: list[str]) -> int:  # type: ignore[no-untyped-def]
    return sum(state == "SUCCESS" for state, _ in queue.fetch_results(ids).values())


def test_redis_restart_mid_run(own_redis, worker_factory, simulator):  # type: ignore[no-untyped-def]
    url = own_redis.url
    env = {"LMQ_BROKER_URL": url, "LMQ_RESULT_BACKEND": url, "LMQ_GPU_MEMORY": "24GiB",
           "LMQ_LMSTUDIO_HOST": simulator.host, "LMQ_CONCURRENCY": "2",
           "PYTHONUNBUFFERED": "1"}
    worker = worker_factory(LLM, env)
    simulator.admin.set_timing(decode_tokens_per_s=60)
    queue, tap = job_queue(url), ResultTap(url)
    try:
        handles = queue.submit_many([{"model": LLM, "messages": f"redis restart {i}",
                                      "config": {"max_tokens": 12}} for i in range(40)])
        ids = [h.id for h in handles]
        wait_until(lambda: _successes(queue, ids) >= 5, timeout=120, message="5 jobs done")
        own_redis.restart()
        if own_redis.appendonly:
            found = wait_finished(queue, ids, timeout=240)
            counts = assert_each_once(found, tap, errors=(JobFailedError,))
            assert sum(counts.values()) == 40 and counts.get("SUCCESS", 0) >= 30, counts
            # Known gap (reported to the workers owner): a job *running* while Redis is
            # down can end FAILURE with the raw Redis error instead of being retried.
            for state, payload in found.values():
                assert state == "SUCCESS" or "ConnectionError" in str(payload), payload
            wait_until(lambda: broker_drained(url), timeout=60, message="queue drained")
        else:
            _assert_documented_loss(queue, ids, url)
        assert worker.is_running()
        # The pool keeps serving after the restart, the served-models check included (the
        # worker's consumer reconnects within seconds; the check never raises meanwhile).
        wait_until(lambda: LLM in queue.served_models(refresh=True), timeout=60,
                   message="the worker serving again")
        again = queue.chat(LLM, "after the restart", config={"max_tokens": 3})
        assert again.result(60).stats.predicted_tokens_count == 3
    finally:
        tap.close()
        queue.close()


def _assert_documented_loss(queue, ids: list[str], url: str) -> None:  # type: ignore[no-untyped-def]
    wait_until(lambda: broker_drained(url), timeout=120, message="nothing left to run")

    def settled() -> dict[str, str] | None:  # jobs running at the restart finish first
        found = {job_id: state for job_id, (state, _) in queue.fetch_results(ids).items()}
        return found if set(found.values()) <= {"SUCCESS", "PENDING"} else None

    states = wait_until(settled, timeout=120, message="running jobs to finish")
    lost = [job_id for job_id, state in states.items() if state == "PENDING"]
    assert set(states.values()) <= {"SUCCESS", "PENDING"}, states
    assert lost, "a restart without persistence lost nothing? then document that instead"
    with pytest.raises(JobTimeoutError, match="may still be running"):
        queue.handle(lost[0]).result(timeout=1)


def test_producer_checks_served_models_after_redis_restart():  # type: ignore[no-untyped-def]
    """kombu pools connections per URL for the whole process: after a restart the pooled
    one's socket is dead, for this JobQueue and for any new one (the served-models check
    every submit runs unless enqueue_anyway, and cancel_model, use a fresh connection)."""
    server = start_redis()
    try:
        with job_queue(server.url) as queue:
            assert queue.served_models(refresh=True) == {}
            server.restart()
            with job_queue(server.url) as newer:
                assert newer.served_models(refresh=True) == {}
            assert queue.served_models(refresh=True) == {}
            assert running_on(queue.app, ["nobody@lmq"]) == []  # cancel_model's inspect
            with pytest.raises(ModelNotServedError, match="no live worker"):
                queue.chat("unserved-model", "after")
    finally:
        server.stop()
