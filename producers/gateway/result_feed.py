"""One Redis subscription for every result the gateway waits for.

Celery's Redis result backend publishes each stored state on a channel named like the
result key. `result_wait.await_meta` opens a pub/sub connection per wait, and redis-py
closes that connection when the wait ends, so every request paid a TCP connect, the
client handshake, SUBSCRIBE and the close: ~7 ms of the event loop's time per request
(measured with a finished job), more than everything else the gateway does. Here one
long-lived pub/sub connection carries every wait's channel: a wait subscribes its key
(and waits for Redis to confirm, so no state stored after that can be missed) and sleeps
until the reader task hands it a published state. A request subscribes before its job is
sent, so it never reads the key at all: the final state arrives as the message itself.

A wait also re-reads the key every `RECHECK_S`, so a lost connection (the reader
reconnects and subscribes again) costs at most that much delay, never a hung request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger("lmq.gateway")
CONFIRM_S = 1.0  # longer than this for Redis to confirm a subscription: go on, re-reading
RECONNECT_S = 0.2
ANCHOR = b"lmq:gateway:result-feed"  # always subscribed: the connection never idles out


class Stored(asyncio.Event):
    """Set when a state of the key is published; `data` is the last one published (Celery's
    backend and our store scripts publish the stored value itself: no read needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: bytes | None = None
        self.subscribed = False  # Redis confirmed the subscription

    def take(self) -> bytes | None:
        """The last published value, consumed (no await between reading and clearing)."""
        data, self.data = self.data, None
        self.clear()
        return data

    def publish(self, data: bytes | None) -> None:
        self.data = data
        self.set()


class ResultFeed:
    """Per result key, the waits on it; one reader task wakes them with what was stored.

    The reader owns the connection: when it is lost, the reader alone opens a new one and
    subscribes every watched channel. redis-py's pub/sub would otherwise reconnect by itself
    from whichever task touched the connection, so a wait subscribing while the reader
    reconnected wrote to a socket being replaced (AttributeError in redis-py) and messages
    of the gap went unnoticed; the feed's connections are therefore made without retries.
    """

    def __init__(self, url: str, client_name: str) -> None:
        self.client = aioredis.Redis.from_url(
            url, client_name=client_name,
            retry=Retry(NoBackoff(), 0, supported_errors=()))  # errors reach the reader
        self._pubsub: PubSub | None = None  # None while the reader renews the connection
        self._reader: asyncio.Task[None] | None = None
        self._waits: dict[bytes, set[Stored]] = {}
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        self._chores: set[asyncio.Task[Any]] = set()
        self._sending = asyncio.Lock()  # one writer on the connection at a time

    async def watch(self, key: str, *, confirm: bool = True) -> Stored:
        """Woken whenever `key`'s state is stored. When this returns the SUBSCRIBE has been
        sent, and with `confirm` Redis confirmed it (if within CONFIRM_S: `subscribed`);
        without, `confirmed(key, stored)` waits for that later."""
        channel = key.encode()
        stored = Stored()
        waits = self._waits.setdefault(channel, set())
        waits.add(stored)
        if len(waits) == 1:
            self._confirmed[channel] = asyncio.get_running_loop().create_future()
            try:
                await self._subscribe(channel)
            except BaseException:  # cancelled while subscribing: leave nothing behind
                self.unwatch(key, stored)
                raise
        if confirm:
            await self.confirmed(key, stored)
        return stored

    async def confirmed(self, key: str, stored: Stored) -> None:
        """Wait at most CONFIRM_S for Redis to confirm `key`'s subscription, then set
        `stored.subscribed` (False: the wait reads the key instead of trusting messages)."""
        channel = key.encode()
        confirmed = self._confirmed.get(channel)
        if confirmed is not None and not confirmed.done():
            try:
                await asyncio.wait({confirmed}, timeout=CONFIRM_S)
            except BaseException:
                self.unwatch(key, stored)
                raise
        confirmed_now = self._confirmed.get(channel)
        stored.subscribed = confirmed_now is not None and confirmed_now.done()

    def unwatch(self, key: str, stored: Stored) -> None:
        """No await (safe in a cancelled wait's `finally`): the unsubscribe is sent later."""
        channel = key.encode()
        waits = self._waits.get(channel)
        if waits is None:
            return
        waits.discard(stored)
        if not waits:
            del self._waits[channel]
            self._confirmed.pop(channel, None)
            self._later(self._unsubscribe(channel))

    async def aclose(self) -> None:
        tasks = [t for t in [self._reader, *self._chores] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.client.aclose()

    async def _subscribe(self, channel: bytes) -> None:
        """Subscribe one channel; on any failure the wait re-reads instead (the reader
        finds the same broken connection and renews it with every watched channel)."""
        async with self._sending:
            try:
                if self._reader is None or self._reader.done():  # the first wait opens it
                    self._pubsub = await self._open()
                    self._reader = asyncio.get_running_loop().create_task(
                        self._read(self._pubsub), name="lmq-result-feed")
                elif self._pubsub is not None:  # else renewing: it subscribes this channel
                    await self._pubsub.subscribe(channel)
            except (redis.RedisError, OSError, AttributeError) as exc:
                log.warning("gateway: result subscription failed (%s); waits re-read", exc)

    async def _unsubscribe(self, channel: bytes) -> None:
        async with self._sending:
            if channel not in self._waits and self._pubsub is not None:  # not watched again
                with contextlib.suppress(redis.RedisError, OSError, AttributeError):
                    await self._pubsub.unsubscribe(channel)

    async def _open(self) -> PubSub:
        """A new connection subscribed to every watched channel (the caller holds
        `_sending`, so no wait adds a channel meanwhile)."""
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(ANCHOR, *self._waits)
        except BaseException:
            with contextlib.suppress(redis.RedisError, OSError, AttributeError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        return pubsub

    def _later(self, chore: Any) -> None:
        task = asyncio.get_running_loop().create_task(chore)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
            except (redis.RedisError, OSError, AttributeError) as exc:
                log.warning("gateway: result feed lost (%s); reconnecting", exc)
                pubsub = await self._renew(pubsub)
                continue
            if message:
                self._deliver(message)

    def _deliver(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if message.get("type") == "subscribe":
            confirmed = self._confirmed.get(channel)  # type: ignore[arg-type]
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif message.get("type") == "message":
            for stored in self._waits.get(channel, ()):  # type: ignore[arg-type]
                stored.publish(message.get("data"))

    async def _renew(self, broken: PubSub) -> PubSub:
        """A new connection with every watched channel; every wait then re-reads its key,
        since a state stored while no connection listened was published to nobody."""
        async with self._sending:
            self._pubsub = None  # waits from now on leave their channel to the new one
        with contextlib.suppress(redis.RedisError, OSError, AttributeError):
            await broken.aclose()  # type: ignore[no-untyped-call]
        while True:
            await asyncio.sleep(RECONNECT_S)
            async with self._sending:
                try:
                    fresh = self._pubsub = await self._open()
                except (redis.RedisError, OSError, AttributeError):
                    continue
            for waits in list(self._waits.values()):
                for stored in waits:
                    stored.publish(None)
            return fresh
