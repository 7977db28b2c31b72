"""A handle's result wait keeps its thread's pub/sub connection from one wait to the next.

The states are stored by Celery's own Redis backend (SET + PUBLISH on the key's channel, as
a worker's final state), on a real Redis server of the test's own (one test restarts it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery import states

from producers import result_wait
from producers.job_queue import JobQueue
from producers.redis_server import RedisServer
from producers.result_wait import wait_meta
from workers.error import JobTimeoutError
from workers.settings import Settings


@pytest.fixture()
def queue(own_redis: RedisServer) -> Iterator[JobQueue]:
    q = JobQueue(Settings(broker_url=own_redis.url, result_backend=own_redis.url,
                          lmstudio_host="127.0.0.1:1"))
    yield q
    q.close()


def _connections(queue: JobQueue) -> int:
    return int(queue.backend_client.info("stats")["total_connections_received"])


def _finish(queue: JobQueue, job_id: str) -> None:
    queue.app.backend.store_result(job_id, {"kind": "test"}, states.SUCCESS)


def _wait(queue: JobQueue, job_id: str, timeout_s: float) -> dict:  # type: ignore[type-arg]
    return wait_meta(queue.app, queue.backend_client, job_id, timeout_s,
                     subscriptions=queue.subscriptions)


def test_waits_one_after_another_share_one_connection(queue: JobQueue) -> None:
    ids = [f"job-{n}" for n in range(30)]
    for job_id in ids:
        _finish(queue, job_id)
    _wait(queue, ids[0], 5)  # this thread's pub/sub connection is opened here
    before = _connections(queue)
    assert all(_wait(queue, job_id, 5)["status"] == states.SUCCESS for job_id in ids)
    assert _connections(queue) == before  # a connection per wait before: 30 more


def test_a_wait_that_timed_out_keeps_the_connection_and_the_next_wait_is_woken(
        queue: JobQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(result_wait, "RECHECK_S", 30.0)  # only the publish can end it soon
    with pytest.raises(JobTimeoutError):
        _wait(queue, "never-finished", 0.2)
    with ThreadPoolExecutor(1) as finisher:  # Celery's backend is per thread: warmed first
        finisher.submit(_finish, queue, "warm").result()
        before = _connections(queue)
        finisher.submit(lambda: (time.sleep(0.3), _finish(queue, "finished-later")))
        started = time.monotonic()
        assert _wait(queue, "finished-later", 10)["status"] == states.SUCCESS
        assert time.monotonic() - started < 10  # the publish woke it, not the 30 s re-read
    assert _connections(queue) == before


def test_a_wait_after_a_redis_restart_opens_a_working_connection(
        queue: JobQueue, own_redis: RedisServer) -> None:
    _finish(queue, "before")
    assert _wait(queue, "before", 5)["status"] == states.SUCCESS
    own_redis.restart()  # the kept connection is dead now
    finisher = threading.Timer(0.3, _finish, (queue, "after"))
    finisher.start()
    assert _wait(queue, "after", 10)["status"] == states.SUCCESS


def test_each_thread_waits_on_its_own_connection(queue: JobQueue) -> None:
    ids = [f"job-{n}" for n in range(40)]
    found: list[str] = []

    def wait_some(part: list[str]) -> None:
        found.extend(_wait(queue, job_id, 10)["status"] for job_id in part)

    threads = [threading.Thread(target=wait_some, args=(ids[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for job_id in ids:
        _finish(queue, job_id)
    for thread in threads:
        thread.join(20)
    assert found == [states.SUCCESS] * 40
