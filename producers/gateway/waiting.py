"""Wait for a job's result while watching the HTTP client: a client that goes away
cancels its job (the prediction stops in LM Studio instead of running for no one)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from redis.connection import parse_url
from starlette.requests import Request

from producers import result_wait
from producers.gateway.result_feed import ResultFeed, Stored
from producers.job_handle import JobHandle
from producers.outcome import FINISHED_STATES, result_or_raise


class ClientGone(Exception):
    """The client disconnected before its job finished; the job was cancelled."""


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        continue


@dataclass
class Watch:
    """A job's result key, subscribed. `early`: subscribed before the job was sent, so every
    state it will ever have is published to this subscription (if Redis confirmed it)."""

    key: str
    stored: Stored
    early: bool = False


class Results:
    """Waits for job results on one shared Redis client and one shared subscription
    (`ResultFeed`): a request opens no connection of its own (`JobHandle.aresult` opens a
    client and a pub/sub connection per wait, which a long-lived server need not pay)."""

    def __init__(self, app: Celery, url: str, broker_url: str | None = None) -> None:
        self.app = app
        self.client = aioredis.Redis.from_url(url, client_name="lmq-gateway")
        self.feed = ResultFeed(url, client_name="lmq-gateway")  # its own connection
        # The results live on the broker's Redis server: a SUBSCRIBE sent before a job's
        # push runs no later than the event-loop turn that takes the push, so before any
        # state of the job can be published (a worker must take the job first). Its
        # confirmation can then be awaited after the job is sent.
        self.on_broker_server = (broker_url is not None and broker_url.startswith(REDIS_SCHEMES)
                                 and _server(url) == _server(broker_url))

    async def subscribe(self, job_id: str, *, confirm: bool = True) -> Watch:
        """Subscribe to a job's result before sending the job; `of(handle, watch)` then
        waits without reading the key (the final state comes as the message). Without
        `confirm` only the SUBSCRIBE is sent: call `confirmed(watch)` once the job is."""
        key = result_wait.result_key(self.app, job_id)
        return Watch(key, await self.feed.watch(key, confirm=confirm), early=True)

    async def confirmed(self, watch: Watch) -> None:
        await self.feed.confirmed(watch.key, watch.stored)

    def drop(self, watch: Watch) -> None:
        """The job was never sent (or is waited on otherwise): unsubscribe."""
        self.feed.unwatch(watch.key, watch.stored)

    async def of(self, handle: JobHandle, watch: Watch | None = None) -> Any:
        """`handle.aresult()`: if the awaiting task is cancelled, so is the job."""
        expires_at = handle.expires_at()  # known from the submit: no Redis read
        if expires_at is None:
            wait = self._meta(handle.id, watch)
        else:  # a deadline to enforce while waiting: the general wait does that
            if watch is not None:
                self.drop(watch)
            wait = result_wait.await_meta(self.app, "", handle.id, None, client=self.client,
                                          expires_at=expires_at)
        waiting = asyncio.ensure_future(wait)
        try:
            # Awaited through asyncio.wait, which cannot lose the caller's cancel (a
            # redis-py read can swallow one: see result_wait.await_meta).
            await asyncio.wait({waiting})
        except asyncio.CancelledError:
            while not waiting.done():
                waiting.cancel()
                await asyncio.wait({waiting}, timeout=result_wait.CANCEL_AGAIN_S)
            # No await: the task is being cancelled; the revoke runs in a thread meanwhile.
            asyncio.get_running_loop().run_in_executor(None, handle.cancel)
            raise
        meta = waiting.result()
        return result_or_raise(handle.id, meta["status"], meta.get("result"))

    async def _meta(self, job_id: str, watch: Watch | None) -> dict[str, Any]:
        """The final meta, from the published states; the key is read when the
        subscription may have come after a state (not early, or not confirmed), after a
        reconnect, and every RECHECK_S without news."""
        if watch is None:
            key = result_wait.result_key(self.app, job_id)
            watch = Watch(key, await self.feed.watch(key))
        stored = watch.stored
        read = not (watch.early and stored.subscribed)
        try:
            while True:
                raw = await self.client.get(watch.key) if read else stored.take()
                meta = result_wait.decode_meta(self.app, raw)
                if meta and meta.get("status") in FINISHED_STATES:
                    return meta
                woke = False
                with contextlib.suppress(TimeoutError):
                    woke = await asyncio.wait_for(stored.wait(), result_wait.RECHECK_S)
                read = not woke or stored.data is None
        finally:
            self.feed.unwatch(watch.key, stored)

    async def aclose(self) -> None:
        await self.feed.aclose()
        await self.client.aclose()


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _server(url: str) -> tuple[object, ...]:
    """The Redis server a URL names (any database)."""
    found = parse_url(url)
    return (found.get("host"), found.get("port", 6379), found.get("path"))


async def result_unless_gone(request: Request, handle: JobHandle, results: Results,
                             watch: Watch | None = None) -> Any:
    """The job's result; ClientGone (with the job revoked) if the client left first."""
    waiter = asyncio.ensure_future(results.of(handle, watch))
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if waiter.done():
        return waiter.result()
    waiter.cancel()  # Results.of() revokes the job when cancelled
    await asyncio.gather(waiter, return_exceptions=True)
    if watch is not None:  # a wait cancelled before it began never unsubscribed
        results.drop(watch)
    raise ClientGone(handle.id)
