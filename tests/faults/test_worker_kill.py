"""Workers killed with SIGKILL at random points of a run; a replacement starts each time.

A killed worker's unacknowledged jobs come back after LMQ_HOLD_LEASE_S (workers.delivery.redelivery;
8 s by default) and run on another worker. The visibility timeout stays well above the
longest job (60 s): with it at 4 s, a job slowed past 4 s on this shared machine was
redelivered while it still ran and both runs published a different SUCCESS. Every job must end
exactly once with its result; no caller may see two different results.

Workers may consume several queues (`-Q`), and the broker may use a global key prefix: the
transport then takes entries with a script instead of BLMOVE
(workers.delivery.held_transport), and a worker killed between taking an entry and booking
it must lose it no more than with one queue.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Sequence

import pytest
import redis

from tests.faults.support import (
    KEY_PREFIX,
    LLM,
    assert_each_once,
    broker_drained,
    broker_picture,
    wait_finished,
)
from tests.integration.test_worker_support import client_app, send
from tests.support.wait import wait_until
from workers.contract import ChatJob, ChatResult, queue_name

pytestmark = [pytest.mark.timeout(600)]

TWIN = f"{LLM}-twin"  # a second queue for the same workers (they run any job on their model)


def consume(models: Sequence[str]) -> list[str]:
    """Worker arguments to consume the queues of `models`."""
    return ["-Q", ",".join(queue_name(model) for model in models)]


def run_with_kills(jobs: int, kills: int, seed: int, worker_factory, lmq_env, queue, tap,
                   timeout: float, models: Sequence[str] = (LLM,)) -> None:  # type: ignore[no-untyped-def]
    env = {**lmq_env, "LMQ_VISIBILITY_TIMEOUT_S": "60", "LMQ_CONCURRENCY": "4"}
    args = consume(models)
    workers = [worker_factory(LLM, env, extra_args=args) for _ in range(2)]
    rng = random.Random(seed)
    handles = queue.submit_many([{"model": models[i % len(models)], "messages": f"kill test {i}",
                                  "config": {"max_tokens": 24}} for i in range(jobs)])
    ids = [h.id for h in handles]
    marks = sorted(rng.sample(range(jobs // 10, jobs * 8 // 10), kills))
    for mark in marks:  # kill when `mark` jobs are done: a random point mid-run
        wait_until(lambda m=mark: _done(queue, ids) >= m, timeout=timeout,
                   message=f"{mark} jobs done before a kill")
        victim = workers.pop(rng.randrange(len(workers)))
        victim.kill()
        workers.append(worker_factory(LLM, env, extra_args=args, wait_ready=False))
    url = queue.settings.broker_url
    try:
        found = wait_finished(queue, ids, timeout=timeout)
    except AssertionError as exc:
        missing = [i for i, (state, _) in queue.fetch_results(ids).items() if state != "SUCCESS"]
        raise AssertionError(f"{exc}; lost jobs on the broker: "
                             f"{broker_picture(url, missing, models)}") from None
    counts = assert_each_once(found, tap)
    assert counts == {"SUCCESS": jobs}, counts
    wait_until(lambda: all(broker_drained(url, model) for model in models), timeout=60,
               message="queues empty and nothing unacknowledged")
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


@pytest.mark.slow
def test_sigkill_during_150_jobs_on_two_queues_every_job_once(
        worker_factory, lmq_env, queue, tap, simulator):  # type: ignore[no-untyped-def]
    simulator.admin.set_timing(decode_tokens_per_s=400)
    run_with_kills(150, 3, seed=5, worker_factory=worker_factory, lmq_env=lmq_env,
                   queue=queue, tap=tap, timeout=240, models=(LLM, TWIN))


@pytest.mark.parametrize("models, prefix", [((LLM, TWIN), ""), ((LLM,), KEY_PREFIX),
                                            ((LLM, TWIN), KEY_PREFIX)],
                         ids=["two-queues", "one-queue-key-prefix", "two-queues-key-prefix"])
def test_worker_killed_while_taking_jobs_loses_none(
        models, prefix, worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    """SIGSTOP an idle worker, queue jobs, SIGKILL it: the pop it had pending may have taken
    one, which is then only in its `popping` list until the next worker's janitor restores
    it. (kombu's BRPOP took it into the dead worker's socket: lost for good.)"""
    env = {**lmq_env, "LMQ_HOLD_LEASE_S": "2"}
    options = {"extra_args": consume(models), "wait_ready": False,  # (pings need the prefix)
               "app": "tests.faults.prefixed_workers" if prefix else "workers"}
    app = client_app(redis_url)
    app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                         "global_keyprefix": prefix}
    first = worker_factory(LLM, env, **options)
    _each_once([_chat(app, model, "warm-up") for model in models])  # consuming every queue
    assert first.process is not None
    first.process.send_signal(signal.SIGSTOP)
    handles = [_chat(app, model, f"taken by a stopped worker {i}")
               for i in range(2) for model in models]
    first.kill()
    worker_factory(LLM, env, **options)
    _each_once(handles)
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: client.hlen(f"{prefix}unacked") == 0, timeout=30, message="all acked")
    assert not list(client.scan_iter(f"{prefix}lmq:popping:*"))
    assert all(client.llen(f"{prefix}{queue_name(model)}") == 0 for model in models)


def _chat(app, model: str, text: str):  # type: ignore[no-untyped-def]
    return send(app, ChatJob(model=model, messages=text, config={"max_tokens": 4}))


def _each_once(handles) -> None:  # type: ignore[no-untyped-def]
    for handle in handles:
        assert ChatResult.model_validate(handle.get(timeout=90)).stats.predicted_tokens_count == 4
