"""Job bodies as greenlets on one event loop (`workers.green`): they wait without blocking
it, at most `limit` run at once, and outside a job greenlet every wait simply blocks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

from workers import green
from workers.lmstudio.loop import SdkLoop


@pytest.fixture()
def sdk_loop():  # type: ignore[no-untyped-def]
    loop = SdkLoop(name="test-green-loop")
    yield loop
    loop.stop()


def _run_all(runner: green.GreenletRunner, bodies: list, timeout_s: float = 5) -> None:
    ended = [runner.spawn(body) for body in bodies]
    done, pending = concurrent.futures.wait(ended, timeout_s)
    assert not pending, f"{len(pending)} job(s) never ended"


def test_jobs_awaiting_on_the_loop_overlap_on_its_thread(sdk_loop: SdkLoop) -> None:
    """Four jobs that each await 0.3 s end in ~0.3 s, not 1.2 s, all on the loop's thread."""
    threads: list[str] = []

    def job() -> None:
        threads.append(threading.current_thread().name)
        green.await_(asyncio.sleep(0.3))
        threads.append(threading.current_thread().name)

    started = time.monotonic()
    _run_all(green.GreenletRunner(sdk_loop.loop, 4), [job] * 4)
    assert time.monotonic() - started < 0.9
    assert set(threads) == {"test-green-loop"} and len(threads) == 8


def test_at_most_limit_run_at_once_and_the_rest_in_order(sdk_loop: SdkLoop) -> None:
    running, most, order = [0], [0], []

    def job(n: int):  # type: ignore[no-untyped-def]
        def body() -> None:
            order.append(n)
            running[0] += 1
            most[0] = max(most[0], running[0])
            green.await_(asyncio.sleep(0.05))
            running[0] -= 1
        return body

    _run_all(green.GreenletRunner(sdk_loop.loop, 2), [job(n) for n in range(6)])
    assert most[0] == 2
    assert order == list(range(6))


def test_errors_of_an_awaited_coroutine_are_raised_in_the_job(sdk_loop: SdkLoop) -> None:
    caught: list[BaseException] = []

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("from the loop")

    def job() -> None:
        try:
            green.await_(fails())
        except ValueError as exc:
            caught.append(exc)

    _run_all(green.GreenletRunner(sdk_loop.loop, 1), [job])
    assert [str(e) for e in caught] == ["from the loop"]


def test_sdk_loop_run_from_a_job_awaits_rather_than_deadlocks(sdk_loop: SdkLoop) -> None:
    results: list[int] = []

    async def answer() -> int:
        await asyncio.sleep(0.01)
        return 42

    runner = green.GreenletRunner(sdk_loop.loop, 1)
    _run_all(runner, [lambda: results.append(sdk_loop.run(answer()))])
    assert results == [42]


def test_a_blocking_wait_runs_in_a_thread_while_the_other_jobs_go_on(sdk_loop: SdkLoop) -> None:
    """A job blocked on an event that another job sets: both end (in place it would hang the
    loop); and a concurrent future is waited for without blocking the loop either."""
    event, seen = threading.Event(), []
    future: concurrent.futures.Future[int] = concurrent.futures.Future()

    def waiter() -> None:
        seen.append(green.blocking(event.wait, 5))
        seen.append(green.wait_future(future, 5) and future.result())

    def setter() -> None:
        green.await_(asyncio.sleep(0.05))
        event.set()
        green.await_(asyncio.sleep(0.05))
        future.set_result(7)

    _run_all(green.GreenletRunner(sdk_loop.loop, 2), [waiter, setter])
    assert seen == [True, 7]


def test_outside_a_job_greenlet_the_helpers_just_block() -> None:
    assert not green.in_job_greenlet()
    assert green.blocking(lambda x: x + 1, 1) == 2
    future: concurrent.futures.Future[int] = concurrent.futures.Future()
    assert not green.wait_future(future, 0.01)
    future.set_result(1)
    assert green.wait_future(future, 0.01)
    with pytest.raises(RuntimeError, match="outside a job greenlet"):
        green.await_(asyncio.sleep(0))
