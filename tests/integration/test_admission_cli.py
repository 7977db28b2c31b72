"""`lmq gpu` as a subprocess against a real Redis holding admission state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from workers.admission.semaphore import GroupSemaphore, Ticket

GIB = 1024**3


@pytest.fixture()
def held(redis_url: str) -> Iterator[GroupSemaphore]:
    sem = GroupSemaphore(redis.Redis.from_url(redis_url), "box:1234", 20 * GIB, 15.0)
    sem.acquire(Ticket("load", "llama", 2 * GIB))
    sem.acquire(Ticket("job", "llama", GIB, 4))
    sem.acquire(Ticket("job", "llama", GIB, 4))
    yield sem
    sem.close()


def lmq(redis_url: str, *args: str) -> str:
    env = {**os.environ, "LMQ_REDIS_URL": redis_url, "LMQ_BROKER_URL": redis_url}
    command = [str(Path(sys.executable).with_name("lmq")), *args]  # the installed entry point
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_gpu_json(redis_url: str, held: GroupSemaphore) -> None:
    (status,) = json.loads(lmq(redis_url, "gpu", "--json"))
    assert status["group"] == "box:1234"
    assert status["budget_bytes"] == 20 * GIB
    assert status["reserved_bytes"] == 4 * GIB
    assert status["free_bytes"] == 16 * GIB
    assert status["slots_in_use"] == {"llama": 2}
    assert status["waiting_jobs"] == 0


def test_gpu_text(redis_url: str, held: GroupSemaphore) -> None:
    out = lmq(redis_url, "gpu")
    assert "group box:1234" in out
    assert "free          16.00 GiB" in out
    assert "slots in use  2  (llama=2)" in out


def test_gpu_without_groups(redis_url: str) -> None:
    # A database of its own: DB 0 is shared with processes of earlier tests.
    empty_url = redis_url.rsplit("/", 1)[0] + "/13"
    redis.Redis.from_url(empty_url).flushdb()
    assert "no admission groups" in lmq(empty_url, "gpu")
    assert json.loads(lmq(empty_url, "gpu", "--json")) == []
