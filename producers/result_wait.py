"""Wait for a job's stored state without polling hard: subscribe, then read.

Celery's Redis result backend publishes every stored state on a channel named like the
result key, so a waiter subscribes first and then reads the key (no lost update), and
re-reads at least every `RECHECK_S` in case a message was missed.

`expires_at` (the job's `expires_s` deadline, epoch seconds): a job still unstarted then
ends as expired (`producers.job_expiry`), so a wait on a job no worker takes ends too.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
import redis.asyncio as aioredis
from celery import Celery

from producers import job_expiry
from producers.outcome import FINISHED_STATES
from workers.error import JobTimeoutError

RECHECK_S = 1.0
CANCEL_AGAIN_S = 0.05  # a cancelled wait still running after this is cancelled again


def result_key(app: Celery, job_id: str) -> str:
    key = app.backend.get_key_for_task(job_id)
    return key.decode() if isinstance(key, bytes) else str(key)


def decode_meta(app: Celery, raw: bytes | str | None) -> dict[str, Any] | None:
    """Celery's own decoding (JSON, exceptions rebuilt from cls(*args))."""
    return None if raw is None else app.backend.decode_result(raw)


def _timeout_error(job_id: str, timeout_s: float | None, state: str) -> JobTimeoutError:
    return JobTimeoutError(f"job {job_id} did not finish within {timeout_s:g}s (state {state}); "
                           "it may still be running")


def _unstarted(meta: dict[str, Any] | None) -> bool:
    return meta is None or meta.get("status") == "PENDING"


def _next_read_s(remaining_s: float, expires_at: float | None) -> float:
    """How long to block before the next read: the recheck, the timeout or the expiry."""
    wait_s = min(remaining_s, RECHECK_S)
    if expires_at is not None:
        wait_s = min(wait_s, max(expires_at - time.time(), 0.0) + 0.01)
    return wait_s


class Subscriptions:
    """A pub/sub connection per thread, kept from one wait to the next.

    A connection of its own per wait (connect, HELLO, SUBSCRIBE, then closed) cost ~0.4 ms
    of the waiter's CPU per job, against ~0.1 ms subscribing and unsubscribing on a kept
    one: `[h.result() for h in handles]` over many jobs. A message a wait left unread
    (its job's last state, an unsubscribe's reply) only wakes the next wait once, which
    then reads its own key. A connection that failed, or whose wait was interrupted (it
    may have stopped in the middle of a reply), is closed, not kept.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._local = threading.local()
        self._open: set[Any] = set()  # every thread's, closed by `close`
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def watching(self, channel: str) -> Iterator[Any]:
        """This thread's pub/sub, subscribed to `channel` while the block runs."""
        pubsub = getattr(self._local, "pubsub", None)
        if pubsub is None:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            with self._lock:
                self._open.add(pubsub)
            self._local.pubsub = pubsub
        kept = False  # the connection is in a known state: between two replies
        try:
            pubsub.subscribe(channel)
            yield pubsub
            kept = True
        except redis.RedisError:
            raise
        except Exception:  # the wait's own outcome (a timeout, say), not the connection's
            kept = True
            raise
        finally:  # an interrupt (KeyboardInterrupt) may have stopped it mid-reply: dropped
            if kept:
                self._leave(pubsub, channel)
            else:
                self._drop(pubsub)

    def _leave(self, pubsub: Any, channel: str) -> None:
        try:
            pubsub.unsubscribe(channel)
        except Exception:  # noqa: BLE001 - a connection that fails here is not kept
            self._drop(pubsub)

    def _drop(self, pubsub: Any) -> None:
        self._local.pubsub = None
        with self._lock:
            self._open.discard(pubsub)
        with contextlib.suppress(Exception):  # failing already: the wait's error is raised
            pubsub.close()

    def close(self) -> None:
        with self._lock:
            kept, self._open = list(self._open), set()
        for pubsub in kept:
            with contextlib.suppress(Exception):
                pubsub.close()


def wait_meta(app: Celery, client: redis.Redis, job_id: str, timeout_s: float | None,
              expires_at: float | None = None,
              subscriptions: Subscriptions | None = None) -> dict[str, Any]:
    """The job's finished meta. `subscriptions`: kept connections to wait on (the
    JobQueue's); without them, a pub/sub connection is opened for this wait."""
    key = result_key(app, job_id)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    if subscriptions is None:
        with _own_subscription(client, key) as pubsub:
            return _wait_on(pubsub, app, client, job_id, key, deadline, timeout_s, expires_at)
    try:
        with subscriptions.watching(key) as pubsub:
            return _wait_on(pubsub, app, client, job_id, key, deadline, timeout_s, expires_at)
    except redis.ConnectionError:  # a kept connection Redis closed (a restart): a new one
        with subscriptions.watching(key) as pubsub:
            return _wait_on(pubsub, app, client, job_id, key, deadline, timeout_s, expires_at)


def _wait_on(pubsub: Any, app: Celery, client: redis.Redis, job_id: str, key: str,
             deadline: float | None, timeout_s: float | None,
             expires_at: float | None) -> dict[str, Any]:
    """Read the state at `key`, woken by `pubsub` (subscribed to its channel), until it is
    final."""
    while True:
        meta = decode_meta(app, client.get(key))
        if _unstarted(meta) and job_expiry.is_past(expires_at):
            meta = job_expiry.expire_unstarted(app, client, job_id, expires_at or 0.0)
            expires_at = None  # decided: expired now, or a worker had started it
        if meta and meta.get("status") in FINISHED_STATES:
            return meta
        remaining = RECHECK_S if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout_error(job_id, timeout_s, (meta or {}).get("status", "PENDING"))
        pubsub.get_message(timeout=_next_read_s(remaining, expires_at))


@contextlib.contextmanager
def _own_subscription(client: redis.Redis, channel: str) -> Iterator[Any]:
    with client.pubsub(ignore_subscribe_messages=True) as pubsub:
        pubsub.subscribe(channel)
        yield pubsub


async def await_meta(app: Celery, url: str, job_id: str, timeout_s: float | None, *,
                     client: aioredis.Redis | None = None,
                     expires_at: float | None = None) -> dict[str, Any]:
    """`wait_meta` for event-loop code. A cancel of the caller always ends the wait.

    `client`: a long-lived caller's shared one (the gateway's: its pool's connections are
    reused and it stays open); else one is opened for this wait and closed after it.

    The wait runs in a task of its own, awaited with asyncio.wait: redis-py (8.1, on Python
    3.11) can swallow a cancel that arrives while it opens its connection (20 of 150 cancels
    in the first 5 ms of a wait were lost; `await JobHandle.aresult()` then went on until
    the job finished, and the job was never revoked). asyncio.wait cannot lose the caller's
    cancel; it is passed on to the wait until the wait has stopped."""
    waiting = asyncio.ensure_future(_await_meta(app, url, job_id, timeout_s, client,
                                                expires_at))
    try:
        await asyncio.wait({waiting})
    except asyncio.CancelledError:
        while not waiting.done():  # a cancel it swallowed is sent again
            waiting.cancel()
            await asyncio.wait({waiting}, timeout=CANCEL_AGAIN_S)
        raise
    return waiting.result()


async def _await_meta(app: Celery, url: str, job_id: str, timeout_s: float | None,
                      shared: aioredis.Redis | None,
                      expires_at: float | None) -> dict[str, Any]:
    key = result_key(app, job_id)
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    client = aioredis.Redis.from_url(url) if shared is None else shared
    reader: asyncio.Task[Any] | None = None
    try:
        async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(key)
            while True:
                meta = decode_meta(app, await client.get(key))
                if _unstarted(meta) and job_expiry.is_past(expires_at):
                    meta = await job_expiry.aexpire_unstarted(app, client, job_id,
                                                              expires_at or 0.0)
                    expires_at = None
                if meta and meta.get("status") in FINISHED_STATES:
                    return meta
                remaining = RECHECK_S if deadline is None else deadline - loop.time()
                if remaining <= 0:
                    raise _timeout_error(job_id, timeout_s, (meta or {}).get("status", "PENDING"))
                # A blocking read in its own task, awaited with asyncio.wait: a timeout inside
                # redis-py's read can swallow a cancel of the awaiting task (Python 3.11),
                # asyncio.wait cannot, so cancelling the caller always revokes the job.
                if reader is not None and reader.done() and reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]  # e.g. Redis went away
                if reader is None or reader.done():
                    reader = asyncio.ensure_future(pubsub.get_message(timeout=None))
                await asyncio.wait({reader}, timeout=_next_read_s(remaining, expires_at))
    finally:
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if shared is None:
            await client.aclose()
