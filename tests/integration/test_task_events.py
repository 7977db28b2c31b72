"""A worker's task events leave in batches (`workers.task_events`), and none is lost.

The test listens to the event exchange on Redis itself (`tests.support.event_tap`), so it
sees each message as Flower's receiver gets it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.support import MODEL, job_queue
from tests.support.event_tap import EventTap, tapped
from tests.support.wait import wait_until
from workers.task_events import FLUSH_INTERVAL_S

pytestmark = pytest.mark.slow

JOB_EVENTS = {"task-received", "task-started", "task-succeeded"}


@pytest.fixture()
def event_tap(redis_url: str) -> Iterator[EventTap]:
    with tapped(redis_url) as tap:
        yield tap


def test_every_job_event_arrives_in_at_most_one_message_per_flush_interval(
        lmq_env, simulator, worker_factory, event_tap):  # type: ignore[no-untyped-def]
    simulator.admin.set_timing(decode_tokens_per_s=1000)  # short jobs: many events a second
    worker_factory(MODEL, lmq_env)
    queue = job_queue(lmq_env)
    handles = [queue.chat(MODEL, f"event {i}", config={"max_tokens": 8}) for i in range(60)]
    for handle in handles:
        handle.result(timeout=60)
    wait_until(lambda: all(event_tap.seen(h.id) >= JOB_EVENTS for h in handles), timeout=10,
               message="the received, started and succeeded events of every job")

    worker_messages = [(at, batch) for at, batch in event_tap.messages
                       if batch[0]["type"] != "task-sent"]  # the producer's are its own
    events = sum(len(batch) for _, batch in worker_messages)
    span_s = worker_messages[-1][0] - worker_messages[0][0]
    # One throttled flush per interval, plus the dispatcher's own flush of a full buffer
    # (24 events) and slack for the first message and arrival jitter.
    bound = span_s / FLUSH_INTERVAL_S + events / 24 + 3
    assert events >= 3 * len(handles)
    assert len(worker_messages) <= bound, (
        f"{len(worker_messages)} messages for {events} events in {span_s:.2f} s")


def test_the_events_of_a_job_finished_during_warm_shutdown_are_sent(
        lmq_env, simulator, worker_factory, event_tap):  # type: ignore[no-untyped-def]
    simulator.admin.set_faults(reply_tokens=40)
    simulator.admin.set_timing(decode_tokens_per_s=40)  # about a second per job
    worker = worker_factory(MODEL, lmq_env)
    handle = job_queue(lmq_env).chat(MODEL, "finish me", config={"max_tokens": 40})
    wait_until(lambda: "task-started" in event_tap.seen(handle.id), timeout=30,
               message="the job started")
    assert worker.stop() == 0  # warm shutdown: the job runs to its end first
    assert handle.result(timeout=30).content
    wait_until(lambda: "task-succeeded" in event_tap.seen(handle.id), timeout=10,
               message="task-succeeded of the job that ended during the shutdown")
