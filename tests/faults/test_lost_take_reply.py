"""A take whose reply is lost: Redis booked the job under the worker (or moved it into its
`popping` list), then the connection dropped before the worker read the reply. The job must
run anyway, on the live worker that reconnects (not only once that worker dies and a
janitor looks)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from producers import job_registry
from producers.job_building import make_config, make_job
from producers.publisher import task_message
from tests.faults.support import LLM, job_queue
from tests.support.wait import wait_until
from workers import keys
from workers.contract import queue_name

pytestmark = pytest.mark.slow


def blocked_take(client: redis.Redis) -> dict[str, str] | None:
    """The worker's consuming connection, idle between takes: blocked on its queue's bell
    (`workers.delivery.held_transport`)."""
    return next((c for c in client.client_list() if c.get("cmd") == "blpop"), None)


def idle_worker(worker_factory, lmq_env, redis_url):  # type: ignore[no-untyped-def]
    """A worker blocked on its bell: (worker, a Redis client, its consuming connection)."""
    worker = worker_factory(LLM, lmq_env)
    client = redis.Redis.from_url(redis_url)
    taking = wait_until(lambda: blocked_take(client), timeout=60,
                        message=lambda: f"the worker blocked on its bell\n{worker.log_tail(20)}")
    return worker, client, taking


def test_a_take_cut_by_a_dropped_connection_is_queued_again(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker, client, taking = idle_worker(worker_factory, lmq_env, redis_url)
    popping = keys.popping(worker.hostname, queue_name(LLM))
    with job_queue(redis_url) as queue:
        # What a take leaves when its reply is lost: the entry in the worker's `popping`.
        job_id = str(uuid.uuid4())
        job = make_job("chat", {"model": LLM, "messages": "lost reply",
                                "config": make_config({"max_tokens": 3})})
        pipe = client.pipeline()
        job_registry.add_to_pipeline(pipe, job_id, job, 3600)
        pipe.lpush(popping, task_message(queue.app, job_id, job))
        pipe.execute()
        client.client_kill_filter(_id=taking["id"])  # the connection drops

        result = queue.handle(job_id).result(timeout=60)
        assert result.stats.predicted_tokens_count == 3
    assert client.llen(popping) == 0
    assert worker.is_running()
    assert "queued again" in worker.log_tail(200)


def test_a_booked_take_cut_by_a_dropped_connection_is_queued_again(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker, client, taking = idle_worker(worker_factory, lmq_env, redis_url)
    with job_queue(redis_url) as queue:
        # What a take leaves when its reply is lost: the entry booked under the worker, as
        # the take script books it (`tenant_turns.TAKE_SCRIPT`).
        job_id = str(uuid.uuid4())
        job = make_job("chat", {"model": LLM, "messages": "lost booked reply",
                                "config": make_config({"max_tokens": 3})})
        entry = task_message(queue.app, job_id, job)
        tag = json.loads(entry)["properties"]["delivery_tag"]
        pipe = client.pipeline()
        job_registry.add_to_pipeline(pipe, job_id, job, 3600)
        pipe.hset("unacked", tag, json.dumps([json.loads(entry), "", queue_name(LLM)]))
        pipe.zadd("unacked_index", {tag: time.time()})
        pipe.sadd(keys.held(worker.hostname), tag)
        pipe.execute()
        client.client_kill_filter(_id=taking["id"])  # the connection drops

        result = queue.handle(job_id).result(timeout=60)
        assert result.stats.predicted_tokens_count == 3
    wait_until(lambda: client.hlen("unacked") == 0, timeout=10, message="acknowledged")
    assert worker.is_running()
    assert "queued again" in worker.log_tail(200)
