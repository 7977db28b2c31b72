"""A bulk submission reaches the broker in growing round trips, the first one small, in order.

A real Redis server of the test's own, watched with MONITOR: each chunk is one MULTI/EXEC
transaction of LPUSHes (the jobs' messages); the test reads how many each one held.
"""

from __future__ import annotations

import json
import threading

import redis

from producers.job_queue import JobQueue
from producers.publisher import CHUNK_JOBS, FIRST_CHUNK_JOBS, broker_list, chunks
from producers.redis_server import RedisServer
from workers.contract import ChatJob
from workers.settings import Settings

MODEL = "no-worker-serves-this"


def test_chunks_double_from_the_first_up_to_the_cap() -> None:
    sizes = [len(chunk) for chunk in chunks(list(range(1000)))]
    assert sizes == [8, 16, 32, 64, 128, 256, 496]
    assert [len(chunk) for chunk in chunks(list(range(3)))] == [3]
    assert max(len(chunk) for chunk in chunks(list(range(5000)))) == CHUNK_JOBS
    assert [x for chunk in chunks(list(range(777))) for x in chunk] == list(range(777))


def _watch_transactions(url: str, transactions: int, ready: threading.Event,
                        pushes: list[int]) -> None:
    """LPUSHes per MULTI/EXEC, for `transactions` transactions."""
    client = redis.Redis.from_url(url)
    with client.monitor() as monitor:
        ready.set()
        in_transaction = 0
        for command in monitor.listen():
            words = command["command"].split()
            if words[0] == "MULTI":
                in_transaction = 0
            elif words[0] == "LPUSH" and words[1] == broker_list_name():
                in_transaction += 1
            elif words[0] == "EXEC":
                pushes.append(in_transaction)
                if len(pushes) == transactions:
                    return


def broker_list_name() -> str:
    return broker_list(ChatJob(model=MODEL, messages=[{"role": "user", "content": "x"}]))


def test_a_bulk_submission_is_sent_first_small_then_doubling_in_order(
        own_redis: RedisServer) -> None:
    queue = JobQueue(Settings(broker_url=own_redis.url, result_backend=own_redis.url,
                              lmstudio_host="127.0.0.1:1"))
    jobs = [{"model": MODEL, "messages": f"question {i}", "config": {"max_tokens": 4}}
            for i in range(300)]
    ready, pushes = threading.Event(), []  # type: ignore[var-annotated]
    watcher = threading.Thread(target=_watch_transactions,
                               args=(own_redis.url, 6, ready, pushes), daemon=True)
    watcher.start()
    assert ready.wait(10)
    try:
        handles = queue.submit_many(jobs, enqueue_anyway=True)
    finally:
        queue.close()
    watcher.join(10)
    assert pushes == [FIRST_CHUNK_JOBS, 16, 32, 64, 128, 52]
    # A worker takes from the list's tail (RPOP): the oldest first, in submission order.
    raw = redis.Redis.from_url(own_redis.url).lrange(broker_list_name(), 0, -1)
    sent = [json.loads(message)["headers"]["id"] for message in reversed(raw)]
    assert sent == [handle.id for handle in handles]
