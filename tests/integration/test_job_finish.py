"""The writes that end a job ride with its final state (`workers.delivery.job_finish`).

Real worker, real Redis, the simulator. What a user can see of it: a stream reader that
reads the end entry finds the result already stored; the metrics count each job once;
both still happen after Redis forgot its scripts, and when our keys live in another Redis
than the results (then each write goes on its own, at the end of the task).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.e2e.support import MODEL, job_queue
from tests.support.wait import wait_until
from workers import keys
from workers.metrics import read_model_metrics

pytestmark = pytest.mark.slow

RESULT_KEY = "celery-task-meta-{}"


def _end_and_state_then(client: redis.Redis, job_id: str, found: dict[str, object]) -> None:
    """Block on the job's fragment stream until its end entry, then read the stored state."""
    last = "0-0"
    while True:
        reply = client.xread({keys.fragment_stream(job_id): last}, block=30_000)
        assert reply, "no end entry within 30 s"
        for entry_id, fields in reply[0][1]:
            last = entry_id
            if b"end" in fields:
                stored = client.get(RESULT_KEY.format(job_id))
                found["end"] = fields[b"end"].decode()
                found["state"] = json.loads(stored)["status"] if stored else None
                return


def test_a_stream_reader_that_sees_the_end_finds_the_result_stored(
        lmq_env, simulator, worker_factory):  # type: ignore[no-untyped-def]
    worker_factory(MODEL, lmq_env)
    queue = job_queue(lmq_env)
    client = redis.Redis.from_url(lmq_env["LMQ_BROKER_URL"])
    for i in range(10):
        handle = queue.chat(MODEL, f"finish {i}", config={"max_tokens": 8})
        found: dict[str, object] = {}
        reader = threading.Thread(target=_end_and_state_then, args=(client, handle.id, found))
        reader.start()
        handle.result(timeout=60)
        reader.join(timeout=60)
        assert found == {"end": "SUCCESS", "state": "SUCCESS"}, f"job {i}: {found}"
    counts = read_model_metrics(lmq_env["LMQ_BROKER_URL"])[MODEL]
    assert counts["succeeded"] == 10 and counts["running"] == 0


def test_jobs_end_whole_after_redis_forgot_its_scripts(
        lmq_env, simulator, worker_factory):  # type: ignore[no-untyped-def]
    worker_factory(MODEL, lmq_env)
    queue = job_queue(lmq_env)
    client = redis.Redis.from_url(lmq_env["LMQ_BROKER_URL"])
    queue.chat(MODEL, "before", config={"max_tokens": 8}).result(timeout=60)
    client.script_flush()  # as a restarted Redis: the store and metrics scripts are unknown
    handle = queue.chat(MODEL, "after", config={"max_tokens": 8})
    assert handle.result(timeout=60).content
    entries = client.xrange(keys.fragment_stream(handle.id))
    assert entries[-1][1] == {b"end": b"SUCCESS"}
    wait_until(lambda: read_model_metrics(lmq_env["LMQ_BROKER_URL"])[MODEL]["succeeded"] == 2,
               timeout=10, message="both jobs counted")


def test_with_our_keys_in_another_redis_each_write_goes_on_its_own(
        lmq_env, redis_url, simulator, worker_factory):  # type: ignore[no-untyped-def]
    ours = redis_url.rsplit("/", 1)[0] + "/5"  # another database: another Redis to the pool
    env = {**lmq_env, "LMQ_REDIS_URL": ours}
    redis.Redis.from_url(ours).flushdb()
    worker_factory(MODEL, env)
    handle = job_queue(env).chat(MODEL, "elsewhere", config={"max_tokens": 8})
    assert handle.result(timeout=60).content
    streams = redis.Redis.from_url(ours)

    def stream_ended() -> bool:
        entries = streams.xrange(keys.fragment_stream(handle.id))
        return bool(entries) and entries[-1][1] == {b"end": b"SUCCESS"}

    wait_until(stream_ended, timeout=10, message="the stream's end entry in LMQ_REDIS_URL")
    wait_until(lambda: read_model_metrics(ours).get(MODEL, {}).get("succeeded") == 1,
               timeout=10, message="the job counted in LMQ_REDIS_URL")
    assert not redis.Redis.from_url(lmq_env["LMQ_BROKER_URL"]).exists(
        keys.fragment_stream(handle.id))


def _monitored(client: redis.Redis, run: Callable[[], None]) -> list[dict[str, Any]]:
    """Redis's MONITOR feed while `run()` runs."""
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def listen() -> None:
        with client.monitor() as monitor:
            for command in monitor.listen():
                seen.append(command)
                if done.is_set() and command["command"] == "PING":
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.3)  # MONITOR on before the jobs
    run()
    done.set()

    def stopped() -> bool:
        client.ping()  # the listener stops at a PING once `done`
        return not listener.is_alive()

    wait_until(stopped, timeout=10, message="the monitor to stop")
    return seen


def _five_jobs_monitored(lmq_env: dict[str, str], worker_factory: Any,
                         ) -> tuple[redis.Redis, list[dict[str, Any]], set[str]]:
    """Five chat jobs run one by one under MONITOR: (client, the feed, the ports of the
    connections that stored a final state)."""
    worker_factory(MODEL, lmq_env)
    queue = job_queue(lmq_env)
    queue.chat(MODEL, "warm up", config={"max_tokens": 8}).result(timeout=60)
    client = redis.Redis.from_url(lmq_env["LMQ_BROKER_URL"])

    def run() -> None:
        for i in range(5):
            queue.chat(MODEL, f"job {i}", config={"max_tokens": 8}).result(timeout=60)

    seen = _monitored(client, run)
    storing = {c["client_port"] for c in seen
               if c["command"].startswith("EVALSHA") and "celery-task-meta-" in c["command"]}
    return client, seen, storing


def test_a_job_that_succeeded_is_acknowledged_in_the_round_trip_of_its_result(
        lmq_env, simulator, worker_factory):  # type: ignore[no-untyped-def]
    client, seen, storing = _five_jobs_monitored(lmq_env, worker_factory)
    acks = [c for c in seen if c["command"].startswith("HDEL unacked ")]
    assert len(acks) == 5, [c["command"] for c in acks]  # once each: Celery's ack wrote none
    assert {c["client_port"] for c in acks} <= storing  # from the result's own connection
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0


def test_with_the_results_in_another_redis_celery_acknowledges_as_before(
        lmq_env, redis_url, simulator, worker_factory):  # type: ignore[no-untyped-def]
    results = redis_url.rsplit("/", 1)[0] + "/6"
    redis.Redis.from_url(results).flushdb()
    env = {**lmq_env, "LMQ_RESULT_BACKEND": results}
    worker_factory(MODEL, env)
    queue = job_queue(env)
    for i in range(3):
        assert queue.chat(MODEL, f"elsewhere {i}", config={"max_tokens": 8}).result(timeout=60)
    broker = redis.Redis.from_url(lmq_env["LMQ_BROKER_URL"])
    wait_until(lambda: broker.hlen("unacked") == 0 and broker.zcard("unacked_index") == 0,
               timeout=10, message="every job acknowledged in the broker")
