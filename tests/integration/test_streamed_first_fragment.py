"""A job someone streams gets its first text published at its first fragment.

The producer says so with a message header (`STREAMED_HEADER`: workers that do not know it
run the job all the same); the worker's job thread then wakes at the prediction's first
fragment to publish it, instead of at its next flush. Checked in parts: the header on the
messages both publishers write, and the wait on a real prediction (the real SDK against
the simulator) with a flush interval longer than the prediction, so that the only flush is
the first fragment's.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis

from producers.async_publisher import AsyncPublisher
from tests.e2e.support import MODEL, job_queue
from workers.celery_config import STREAMED_HEADER
from workers.contract import queue_name
from workers.lmstudio.prediction import Callbacks, Prediction
from workers.lmstudio.session import Session

NEVER_S = 3600.0  # a flush interval no prediction here reaches


def _headers(redis_url: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url)
    lists = [key for key in client.keys("*") if key.decode().startswith(queue_name(MODEL))
             and client.type(key) == b"list"]
    return [json.loads(raw)["headers"] for key in lists for raw in client.lrange(key, 0, -1)]


def test_a_streamed_job_carries_the_header_and_others_do_not(lmq_env: dict[str, str],
                                                             redis_url: str) -> None:
    queue = job_queue(lmq_env)
    streamed = queue.chat(MODEL, "streamed", enqueue_anyway=True, streamed=True)
    plain = queue.complete(MODEL, "plain", enqueue_anyway=True)
    pairs = queue.prepare([{"kind": "chat", "model": MODEL, "messages": "from the loop"}],
                          enqueue_anyway=True)

    async def publish_from_a_loop() -> None:
        publisher = AsyncPublisher(queue.publisher)
        await publisher.publish(pairs, streamed=True)
        await publisher.aclose()

    asyncio.run(publish_from_a_loop())
    by_id = {headers["id"]: headers for headers in _headers(redis_url)}
    assert by_id[streamed.id].get(STREAMED_HEADER) is True
    assert STREAMED_HEADER not in by_id[plain.id]
    assert by_id[pairs[0][0]].get(STREAMED_HEADER) is True
    queue.close()


@pytest.fixture()
def session(simulator: Any) -> Any:
    simulator.admin.set_timing(decode_tokens_per_s=50)  # 20 tokens: ~0.4 s of prediction
    opened = Session(simulator.host)
    opened.open()
    model = next(found for found in opened.downloaded() if found.key == MODEL)
    opened.load(model, {})
    yield opened
    opened.close()


def _predict(session: Session, first_at_once: bool) -> tuple[list[bool], str]:
    """The prediction's flushes (each: had it ended by then?) and its text."""
    flushes: list[bool] = []
    callbacks = Callbacks(on_prompt=lambda _progress: None, on_first_token=lambda: None,
                          on_fragment=lambda _text, _tokens: None)
    prediction = Prediction.begin(session, "chat", "Tell me something", {"maxTokens": 20},
                                  callbacks)
    outcome = prediction.wait(lambda: flushes.append(prediction._future.done()), NEVER_S,
                              first_at_once=first_at_once)
    return flushes, outcome.content


def test_the_first_fragment_of_a_streamed_prediction_is_flushed_before_it_ends(
        session: Session) -> None:
    flushes, text = _predict(session, first_at_once=True)
    assert text
    assert flushes == [False]  # once, at the first fragment, while it still ran


def test_a_prediction_nobody_streams_waits_for_the_flush_interval(session: Session) -> None:
    flushes, text = _predict(session, first_at_once=False)
    assert text
    assert flushes == []  # the whole text is left to the job's end entry
