"""Cancellation from the producer side (issue 4): JobHandle.cancel(), `lmq cancel`, asyncio
task cancellation, bulk cancels. Each checks with the simulator's message log that the
cancel reached LM Studio, that the job ended REVOKED, and that the partial result is kept."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers import JobCancelledError, JobHandle
from producers.cancellation import CancelOutcome
from producers.local_pool import LocalPool
from producers.redis_server import RedisServer
from tests.support.pool import pool_on_database
from tests.support.wait import wait_until

CHAT = "llama-3.2-1b-instruct"
LMQ = str(Path(sys.executable).parent / "lmq")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, sim: object) -> Iterator[LocalPool]:
    with pool_on_database(redis_server, sim, 4, [CHAT]) as started:
        yield started


@pytest.fixture()
def admin(sim: object) -> Iterator[object]:
    """Long, slow replies (20 tokens/s), so a job is mid-generation when it is cancelled."""
    admin = sim.admin  # type: ignore[attr-defined]
    admin.reset()
    admin.set_timing(decode_tokens_per_s=20.0)
    admin.set_faults(reply_tokens=2000)
    yield admin
    admin.reset()
    admin.set_timing(decode_tokens_per_s=200.0)


def lmq(pool: LocalPool, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **pool.env}
    env.pop("LMQ_MODEL", None)
    return subprocess.run([LMQ, *args], env=env, capture_output=True, text=True, timeout=120)


def generating(handle: JobHandle) -> JobHandle:
    wait_until(lambda: (p := handle.progress()) is not None and p.tokens_so_far > 0,
               timeout=60, message=f"job {handle.id} generating")
    return handle


def assert_cancelled_with_partial(pool: LocalPool, admin: object, handle: JobHandle) -> None:
    wait_until(lambda: admin.log(type="channelSend:cancel"), timeout=30,  # type: ignore[attr-defined]
               message="a cancel message at the simulator")
    with pytest.raises(JobCancelledError) as caught:
        handle.result(timeout=60)
    partial = caught.value.partial
    assert partial is not None and partial["content"]
    assert partial["stats"]["stop_reason"] == "userStopped"
    assert handle.status() == "REVOKED"
    shown = lmq(pool, "result", handle.id)
    assert shown.returncode == 0, shown.stderr
    assert "CANCELLED" in shown.stdout and partial["content"][:20] in shown.stdout


def test_handle_cancel_stops_the_prediction(pool: LocalPool, admin: object) -> None:
    handle = generating(pool.queue.chat(CHAT, "a long story", config={"max_tokens": 1500}))
    assert handle.cancel() is CancelOutcome.REVOKED
    assert_cancelled_with_partial(pool, admin, handle)


def test_cli_cancel_by_id(pool: LocalPool, admin: object) -> None:
    handle = generating(pool.queue.complete(CHAT, "Once upon a time", config={"max_tokens": 1500}))
    done = lmq(pool, "cancel", handle.id)
    assert done.returncode == 0 and f"revoked job {handle.id}" in done.stdout, done.stderr
    assert_cancelled_with_partial(pool, admin, handle)


def test_cancelled_asyncio_task_revokes_the_job(pool: LocalPool, admin: object) -> None:
    handle = pool.queue.chat(CHAT, "an epic", config={"max_tokens": 1500})

    async def main() -> None:
        waiter = asyncio.create_task(handle.aresult(timeout=120))
        await asyncio.to_thread(generating, handle)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(main())
    assert_cancelled_with_partial(pool, admin, handle)


def test_cancel_of_a_finished_or_unknown_job(pool: LocalPool, admin: object) -> None:
    admin.clear_faults()  # type: ignore[attr-defined]
    admin.set_timing(decode_tokens_per_s=2000.0)  # type: ignore[attr-defined]
    handle = pool.queue.chat(CHAT, "short", config={"max_tokens": 5})
    content = handle.result(timeout=60).content
    assert handle.cancel() is CancelOutcome.ALREADY_FINISHED
    again = lmq(pool, "cancel", handle.id)
    assert again.returncode == 0 and "already finished" in again.stdout and "nothing changed" \
        in again.stdout
    assert handle.status() == "SUCCESS" and handle.result(timeout=5).content == content
    unknown = lmq(pool, "cancel", "no-such-job")
    assert unknown.returncode != 0 and "unknown job id" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_cancel_all_jobs_of_a_model(pool: LocalPool, admin: object) -> None:
    handles = pool.queue.submit_many([{"model": CHAT, "messages": f"story {i}",
                                       "config": {"max_tokens": 1500}} for i in range(8)])
    generating(handles[0])
    done = lmq(pool, "cancel", "--all", "--model", CHAT, "--yes")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: all(h.status() == "REVOKED" for h in handles), timeout=90,
               message="all 8 jobs REVOKED")
    assert admin.log(type="channelSend:cancel")  # type: ignore[attr-defined]


def test_cancel_all_asks_first(pool: LocalPool) -> None:
    refused = subprocess.run([LMQ, "cancel", "--all", "--model", CHAT], input="n\n",
                             env={**os.environ, **pool.env}, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0 and "Cancel every queued and running job" in refused.stdout


def test_cancel_a_batch(pool: LocalPool, admin: object) -> None:
    batch_id = f"batch-{uuid.uuid4()}"
    handles = pool.queue.submit_many([{"model": CHAT, "messages": f"tale {i}",
                                       "config": {"max_tokens": 1500}} for i in range(6)],
                                     batch_id=batch_id)
    generating(handles[0])
    done = lmq(pool, "cancel", "--batch", batch_id, "--json")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: all(h.status() == "REVOKED" for h in handles), timeout=90,
               message="the batch's jobs REVOKED")
    assert lmq(pool, "cancel", "--batch", "nope").returncode != 0


def test_a_cancel_at_any_moment_of_an_async_wait_reaches_the_caller(redis_url: str) -> None:
    """The race behind test_cancelled_asyncio_task_revokes_the_job failing 1 run in 6: a
    cancel that arrived while redis-py opened its connection was swallowed, and the wait went
    on. Here the cancel walks through the first event-loop steps of a wait (real Redis), and
    each must end the wait at once."""
    from celery import Celery

    from producers import result_wait

    app = Celery(broker=redis_url, backend=redis_url)

    async def cancelled_after(steps: int) -> bool:
        wait = asyncio.ensure_future(result_wait.await_meta(app, redis_url, "no-job", 60))
        for _ in range(steps):
            await asyncio.sleep(0)  # one event-loop step: a different await is cancelled
        wait.cancel()
        try:
            await asyncio.wait_for(wait, timeout=2)
        except asyncio.CancelledError:
            return True
        except TimeoutError:
            return False  # the cancel was swallowed: still waiting 2 s later
        return False

    async def main() -> list[int]:
        return [steps for steps in range(60) for _ in range(3)
                if not await cancelled_after(steps)]

    assert asyncio.run(main()) == []  # the steps at which a cancel was lost
