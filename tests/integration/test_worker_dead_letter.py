"""A malformed queue entry goes to `lmq:dead:<queue>`; the worker keeps serving."""

from __future__ import annotations

import json

import pytest
import redis

from tests.integration.test_worker_support import LLM, client_app, send
from tests.support.wait import wait_until
from workers import keys
from workers.contract import ChatJob, ChatResult, queue_name
from workers.delivery.dead_letter import DEAD_LETTERS_MAX
from workers.keys import dead_letters

pytestmark = [pytest.mark.timeout(120)]


def test_malformed_entries_are_dead_lettered_and_the_worker_keeps_serving(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker = worker_factory(LLM, lmq_env)
    client = redis.Redis.from_url(redis_url)
    queue = queue_name(LLM)
    client.lpush(queue, "not json at all", json.dumps({"headers": [1], "properties": {}}))
    app = client_app(redis_url)
    result = ChatResult.model_validate(
        send(app, ChatJob(model=LLM, messages="after it", config={"max_tokens": 3}))
        .get(timeout=30))
    assert result.stats.predicted_tokens_count == 3 and worker.is_running()
    entries = [json.loads(e) for e in client.lrange(dead_letters(queue), 0, -1)]
    assert [e["entry"] for e in entries][-1] == "not json at all"
    assert all(e["queue"] == queue and e["reason"] and e["at"] for e in entries)
    assert len(entries) == 2
    wait_until(lambda: worker.log_tail().count(f"moved to {dead_letters(queue)}") == 2,
               timeout=10, message=lambda: worker.log_tail(20))
    client.close()


def test_the_dead_letter_list_is_bounded(worker_factory, lmq_env, redis_url,
                                        simulator):  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(redis_url)
    queue, key = queue_name(LLM), dead_letters(queue_name(LLM))
    client.rpush(key, *["old"] * DEAD_LETTERS_MAX)
    worker = worker_factory(LLM, lmq_env)
    client.lpush(queue, "garbage")
    wait_until(lambda: client.lindex(key, 0) != b"old", timeout=30,
               message=lambda: worker.log_tail(20))
    assert client.llen(key) == DEAD_LETTERS_MAX and worker.is_running()
    client.close()


def test_an_entry_the_take_booked_then_dead_lettered_leaves_no_booking(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    """Readable enough for the take script to book it (a delivery tag and delivery_info),
    not a task: dead-lettered, and out of `unacked` and the worker's held set again."""
    worker = worker_factory(LLM, lmq_env)
    client = redis.Redis.from_url(redis_url)
    queue = queue_name(LLM)
    client.lpush(queue, json.dumps({"headers": [1], "properties": {
        "delivery_tag": "booked-bad", "delivery_info": {"exchange": "", "routing_key": queue}}}))
    app = client_app(redis_url)
    send(app, ChatJob(model=LLM, messages="after it", config={"max_tokens": 3})).get(timeout=30)
    assert client.llen(dead_letters(queue)) == 1 and worker.is_running()
    assert not client.hexists("unacked", "booked-bad")
    assert not client.sismember(keys.held(worker.hostname), "booked-bad")
    client.close()
