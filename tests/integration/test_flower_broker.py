"""Flower's queue lengths (its Broker page, `/api/queues/length`) count the jobs waiting on
tenants' lists (`workers.flower.broker`). Real Flower, a real worker, the simulator."""

from __future__ import annotations

import httpx
import pytest

from producers.flower_process import FlowerProcess
from tests.e2e.support import AUTH, MODEL, flower_env, job_queue, long_replies, start_flower
from tests.support.wait import wait_until
from workers.contract import queue_name

pytestmark = pytest.mark.slow


def _lengths(flower: FlowerProcess) -> dict[str, int]:
    response = httpx.get(f"{flower.url}/api/queues/length", auth=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return {q["name"]: q["messages"] for q in response.json()["active_queues"]}


def test_queue_length_counts_every_tenants_waiting_jobs(
        lmq_env, simulator, worker_factory, flowers):  # type: ignore[no-untyped-def]
    env = flower_env(lmq_env, LMQ_CONCURRENCY="1")
    worker_factory(MODEL, env)
    flower = start_flower(env, flowers)
    queue = job_queue(env)
    long_replies(simulator)
    busy = queue.chat(MODEL, "keep the worker busy")
    wait_until(lambda: busy.status() in ("STARTED", "PROGRESS"), timeout=30,
               message="the worker busy")
    waiting = [queue.chat(MODEL, "a", tenant="a"), queue.chat(MODEL, "a", tenant="a"),
               queue.chat(MODEL, "b", tenant="b", priority="low"), queue.chat(MODEL, "none")]
    name = queue_name(MODEL)
    wait_until(lambda: _lengths(flower).get(name) == len(waiting), timeout=30,
               message=lambda: f"Flower counting {len(waiting)} waiting: {_lengths(flower)}")
    queue.cancel(busy.id)
