"""The corpus dispatcher takes a job's SUCCESS from what the result backend published as it
stored it, and reads only the other jobs' states (real Redis; states stored by Celery's own
Redis backend, which sets the key and publishes the value, as a worker's final state)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import states

from producers.corpus._chunk import Chunk
from producers.corpus._dispatch import Dispatcher, DispatchOptions, Flight
from producers.corpus._plan import JobPlan
from producers.corpus._progress import Progress
from producers.corpus._state import RunState
from producers.corpus._writer import OrderedOutput
from producers.job_queue import JobQueue
from producers.redis_server import RedisServer
from producers.result_wait import result_key
from workers.settings import Settings


@pytest.fixture()
def queue(own_redis: RedisServer) -> Iterator[JobQueue]:
    q = JobQueue(Settings(broker_url=own_redis.url, result_backend=own_redis.url,
                          lmstudio_host="127.0.0.1:1"))
    yield q
    q.close()


@pytest.fixture()
def dispatcher(queue: JobQueue, tmp_path: Path) -> Iterator[Dispatcher]:
    output = OrderedOutput(tmp_path / "out.parquet", "parquet")
    made = Dispatcher(queue, RunState(tmp_path / "state"), DispatchOptions(model="m"),
                      Progress(1, enabled=False), output)
    yield made
    output.abort()


def _flight(tmp_path: Path, name: str) -> Flight:
    return Flight(JobPlan(0, [("id0", "sha0", Chunk("doc", 0, 0, 4, "text", 1))]),
                  tmp_path / name)


def test_a_published_success_is_taken_as_it_was_published(
        queue: JobQueue, dispatcher: Dispatcher, tmp_path: Path) -> None:
    dispatcher.flights = {"done": _flight(tmp_path, "a"), "running": _flight(tmp_path, "b")}
    dispatcher._signals.watch(["done", "running"])
    queue.app.backend.store_result("done", {"kind": "embedding", "completed": 1},
                                   states.SUCCESS)
    queue.app.backend.store_result("running", {"done": 1, "total": 4}, "PROGRESS")
    for _ in range(20):  # both messages in (the published values accumulate)
        dispatcher._signals.wait(0.05)
    # Gone from Redis: only the published value can say the job succeeded.
    queue.backend_client.delete(result_key(queue.app, "done"))
    found = dispatcher._states()
    assert found["done"] == (states.SUCCESS, {"kind": "embedding", "completed": 1})
    assert found["running"][0] == "PROGRESS"  # not final: read from its key


def test_a_job_not_published_is_read_from_its_key(
        queue: JobQueue, dispatcher: Dispatcher, tmp_path: Path) -> None:
    """A message missed (stored before the subscription, say): the MGET finds the state."""
    queue.app.backend.store_result("early", {"kind": "embedding"}, states.SUCCESS)
    dispatcher.flights = {"early": _flight(tmp_path, "a"), "queued": _flight(tmp_path, "b")}
    dispatcher._signals.watch(["early", "queued"])
    dispatcher._signals.wait(0.2)
    found = dispatcher._states()
    assert found["early"][0] == states.SUCCESS and found["queued"][0] == states.PENDING
