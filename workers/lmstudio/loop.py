"""The worker's one event loop for the SDK's `AsyncClient` (issue 22).

Why a loop of our own: the SDK's sync `lms.Client` runs its websocket on a background
event loop and hands every received message (each prediction fragment) to the waiting
job thread, one cross-thread wake-up per message: 23-30% of a worker's CPU at the stress
timing (ops/profile-worker-stress.md). With the `AsyncClient` on this loop, the messages
are consumed where they arrive, and the jobs themselves run here as greenlets: a job
awaits its SDK calls on this thread, no hop at all.

One `SdkLoop` per worker process, a daemon thread named `lmq-sdk-loop`. The jobs run on
it too, as greenlets (`workers.delivery.pool`, `workers.green`); they and other
threads call `run(coro)` (submit and wait) or `submit(coro)` (a concurrent future);
everything that touches the client runs on this thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from workers import green

T = TypeVar("T")

_STOP_TIMEOUT_S = 5.0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (not on Windows), else asyncio's: the SDK's
    websocket reads and every fragment's callbacks run on this loop, and libuv's costs
    less CPU per message (ops/profile-worker-stress.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _declare_asyncio_to_sniffio() -> None:
    """Only asyncio runs on this thread: say so to sniffio where it is installed. anyio
    (under the SDK's websocket) asks it several times per message; else it sniffs with
    `asyncio.current_task()` each time: 0.4 us a call here, 0.05 us declared (up to 7%
    of the loop's py-spy samples at the LM Studio-like timing). Without sniffio, anyio
    asks `asyncio.get_running_loop()` instead (0.15 us)."""
    try:
        import sniffio
    except ImportError:
        return
    sniffio.thread_local.name = "asyncio"


class SdkLoop:
    """An asyncio event loop running in its own daemon thread."""

    def __init__(self, name: str = "lmq-sdk-loop") -> None:
        self.loop = new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name=name,
                                        daemon=True)
        self._thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        _declare_asyncio_to_sniffio()
        self.loop.call_soon(started.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> green.AnyFuture[T]:
        """Schedule `coro` on the loop; its future (thread-safe). From a job greenlet, on
        the loop's own thread, that is the task itself: no hand-over through the loop's
        wake-up pipe to start it, nor to tell the job it ended (`green.wait_future`)."""
        if green.in_job_greenlet():
            return self.loop.create_task(coro)
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for its result (from any other thread).

        From a job greenlet on this loop (`workers.green`) it is awaited there.
        No timeout here: the coroutines bound their own waits (`Session` wraps each call
        in LMQ_SDK_TIMEOUT_S between messages), so a cancelled wait never leaves a call
        running on the loop.
        """
        if green.in_job_greenlet():
            return green.await_(coro)
        if self.in_loop():
            raise RuntimeError("SdkLoop.run() called from the loop's own thread")
        return self.submit(coro).result()

    def call_soon(self, func: Callable[[], object]) -> None:
        """Run `func` on the loop soon (from any thread; no result)."""
        self.loop.call_soon_threadsafe(func)

    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self) -> None:
        """Stop the loop and its thread (after the client was closed on it)."""
        if not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(_STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()
