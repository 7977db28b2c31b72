"""Job bodies as greenlets on the SDK loop: sync code that awaits without a thread.

A Celery task body is sync code (Celery's tracer calls it and stores what it returns), and
the worker's predictions are coroutines on the SDK loop (`workers.lmstudio.loop`). In a
threads pool every job crosses between its thread and the loop, and in one process the
job threads, Celery's consumer and the loop wait for one another's GIL at every blocking
call (ops/profile-worker-stress.md). Here each job's body, tracer and all, runs as a
greenlet on the loop's own thread: where it would wait for a coroutine it calls
`await_(coro)`, which suspends the greenlet and lets the loop run until the coroutine is
done, then resumes it right there. What SQLAlchemy's asyncio bridge does, for the same
reason: sync code on top of an event loop.

A job greenlet must not block the loop's thread for long: a wait for another job (a slot
another greenlet holds, a BLPOP for a verdict a job on this loop sends when it ends)
would never end. So the job code waits through this module: `await_` for a coroutine,
`wait_future` for a future, `blocking(fn)` for a call that may block (it runs
in a thread meanwhile); outside a job greenlet (a thread, a test) each simply blocks.
The Redis clients jobs use wait for their replies on the loop too (`wait_readable`,
`workers.redis_pool.YieldingConnectionPool`). Other short blocking I/O (a log line, Redis
over TLS) is done in place: it delays the loop that long.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenlet

log = logging.getLogger(__name__)
T = TypeVar("T")

# The threads `blocking` waits in: one per job waiting at once (for a slot, a verdict, a
# backoff), started on demand; jobs waiting at once are bounded by the pool's limit.
_WAIT_THREADS = 256
_waiters = concurrent.futures.ThreadPoolExecutor(_WAIT_THREADS, thread_name_prefix="lmq-wait")


# What a job may wait for: a concurrent future, or from a job greenlet an asyncio one.
AnyFuture = concurrent.futures.Future[T] | asyncio.Future[T]


class JobGreenlet(greenlet.greenlet):
    """A greenlet that `await_` may suspend (started by a `GreenletRunner`)."""


def in_job_greenlet() -> bool:
    return isinstance(greenlet.getcurrent(), JobGreenlet)


def await_(awaitable: Awaitable[T]) -> T:
    """From a job greenlet: wait for `awaitable` on the loop, without blocking it."""
    current = greenlet.getcurrent()
    if not isinstance(current, JobGreenlet):
        if asyncio.iscoroutine(awaitable):
            awaitable.close()  # never awaited: say so once, here, not as a warning later
        raise RuntimeError("await_() called outside a job greenlet")
    return current.parent.switch(awaitable)  # type: ignore[no-any-return]


def blocking(func: Callable[..., T], *args: Any) -> T:
    """`func(*args)`, which may block: from a job greenlet in a thread, while the loop runs
    on; elsewhere right here."""
    if not in_job_greenlet():
        return func(*args)
    loop = asyncio.get_running_loop()
    return await_(loop.run_in_executor(_waiters, functools.partial(func, *args)))


def wait_future(future: AnyFuture[Any], timeout_s: float | None) -> bool:
    """Wait up to `timeout_s` (None: no limit) for `future`; True if it is done. An
    asyncio future only from a job greenlet on its loop (as `SdkLoop.submit` gives one)."""
    if future.done():
        return True
    if not in_job_greenlet():
        assert isinstance(future, concurrent.futures.Future)
        done, _ = concurrent.futures.wait([future], timeout_s)
        return bool(done)
    # wrap_future hands an asyncio future back as it is
    await_(asyncio.wait([asyncio.wrap_future(future)], timeout=timeout_s))
    return future.done()


def wait_readable(fd: int, timeout_s: float | None) -> None:
    """From a job greenlet: let the loop run until `fd` has data to read (or `timeout_s`
    passed: the read that follows then times out as it would have)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _set_done, ready)
    timer = loop.call_later(timeout_s, _set_done, ready) if timeout_s is not None else None
    try:
        await_(ready)
    finally:
        loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class GreenletRunner:
    """Runs sync functions as job greenlets on `loop`, at most `limit` at once, the others
    in the order they came."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.loop = loop
        self.limit = limit
        self.running = 0  # (loop only)
        self._waiting: collections.deque[_Job] = collections.deque()

    def spawn(self, func: Callable[..., Any], *args: Any) -> concurrent.futures.Future[None]:
        """Run `func(*args)` as a job greenlet (from any thread); a future done when it
        ended (its result is None: `func` reports its own outcome)."""
        job = _Job(func, args, concurrent.futures.Future())
        self.loop.call_soon_threadsafe(self._admit, job)
        return job.ended

    def busy(self) -> bool:
        return self.running > 0 or bool(self._waiting)

    def drop_waiting(self) -> None:
        """Forget the jobs not started yet (at shutdown: their messages stay unacknowledged);
        from any thread."""
        self.loop.call_soon_threadsafe(self._drop_waiting)

    def _drop_waiting(self) -> None:
        while self._waiting:
            self._waiting.popleft().ended.set_result(None)

    def _admit(self, job: _Job) -> None:
        if self.running < self.limit:
            self._start(job)
        else:
            self._waiting.append(job)

    def _start(self, job: _Job) -> None:
        self.running += 1
        greenlet_ = JobGreenlet(job.func)
        self._advance(job, greenlet_, greenlet_.switch, *job.args)

    def _advance(self, job: _Job, greenlet_: JobGreenlet, step: Callable[..., Any],
                 *args: Any) -> None:
        """Run the greenlet until it awaits (it resumes when that is done) or ends."""
        awaited = None
        try:
            awaited = step(*args)
        except BaseException:  # noqa: BLE001 - Celery's tracer reported the job's own errors
            log.exception("a job greenlet raised")
        if greenlet_.dead:
            self._ended(job)
            return
        future = asyncio.ensure_future(awaited, loop=self.loop)
        future.add_done_callback(lambda done: self._resume(job, greenlet_, done))

    def _resume(self, job: _Job, greenlet_: JobGreenlet, done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            self._advance(job, greenlet_, greenlet_.throw, asyncio.CancelledError())
        elif (error := done.exception()) is not None:
            self._advance(job, greenlet_, greenlet_.throw, error)
        else:
            self._advance(job, greenlet_, greenlet_.switch, done.result())

    def _ended(self, job: _Job) -> None:
        self.running -= 1
        job.ended.set_result(None)
        while self._waiting and self.running < self.limit:
            self._start(self._waiting.popleft())


@dataclasses.dataclass(frozen=True)
class _Job:
    func: Callable[..., Any]
    args: tuple[Any, ...]
    ended: concurrent.futures.Future[None]
