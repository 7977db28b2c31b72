"""One websocket: auth, framing, concurrent dispatch, cancel routing, teardown.

Every rpcCall and channelCreate runs as its own task; when the socket closes, the
connection's tasks are cancelled so in-flight work stops. Only rpcResult / rpcError /
channelSend / channelClose / channelError / communicationWarning are ever sent, always as
text frames.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from simulator import errors
from simulator.errors import SimError
from simulator.log import ChannelStats
from simulator.state import SimState

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_conn_ids = itertools.count(1)
_LOGGED_DIMS = 8
_MAX_WARNINGS = 5  # LM Studio's ServerPort stops sending communication warnings after five
VOID = object()  # rpc handlers return this for endpoints with no result

RpcHandler = Callable[["Connection", Any], Awaitable[Any]]
ChannelHandler = Callable[["Channel"], Awaitable[None]]


class Channel:
    def __init__(self, conn: Connection, channel_id: int, endpoint: str, param: Any) -> None:
        self.conn = conn
        self.id = channel_id
        self.endpoint = endpoint
        self.param = param or {}
        self.cancelled = asyncio.Event()
        self.cancel_reason = "userStopped"
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # client messages but cancel
        self.stats: ChannelStats = conn.state.log.open_channel(
            conn.id, conn.ns, channel_id, endpoint)

    async def send(self, message: dict[str, Any]) -> None:
        await self.conn.send({"type": "channelSend", "channelId": self.id, "message": message})

    async def send_fragment(self, message: dict[str, Any]) -> None:
        stats = self.stats
        stats.fragments += 1
        stats.last_fragment_t = now = time.time()
        if stats.first_fragment_t is None:
            stats.first_fragment_t = now
        if stats.cancel_t is not None:
            stats.fragments_after_cancel += 1
            stats.fragments_after_cancel_t.append(now)
        await self.send(message)

    @property
    def closed(self) -> bool:
        return self.stats.closed_t is not None or self.conn.closed

    async def close(self) -> None:
        self.stats.closed_t = time.time()
        await self.conn.send({"type": "channelClose", "channelId": self.id})

    async def error(self, error: dict[str, Any]) -> None:
        self.stats.closed_t = time.time()
        self.stats.error = str(error.get("title"))
        await self.conn.send({"type": "channelError", "channelId": self.id, "error": error})

    def cancel(self, reason: str = "userStopped") -> None:
        """Client cancel (userStopped) or server-side stop, e.g. modelUnloaded."""
        if reason == "userStopped" and self.stats.cancel_t is None:
            self.stats.cancel_t = time.time()
        if not self.cancelled.is_set():
            self.cancel_reason = reason
        self.cancelled.set()


def _compact(reply: dict[str, Any]) -> dict[str, Any]:
    """Log only a vector's head: full embeddings would make the log huge."""
    vector = reply["result"]["embedding"]
    head = {"embedding": vector[:_LOGGED_DIMS], "embeddingDims": len(vector)}
    return {**reply, "result": head}


class Connection:
    def __init__(self, state: SimState, ws: ServerConnection, ns: str,
                 rpcs: dict[str, RpcHandler], channels: dict[str, ChannelHandler]) -> None:
        self.state = state
        self.ws = ws
        self.ns = ns
        self.id = next(_conn_ids)
        self._rpcs = rpcs
        self._channel_handlers = channels
        self._channels: dict[int, Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._warnings_sent = 0
        self.client_id: str | None = None  # the auth packet's clientIdentifier
        self.closed = False

    async def warn(self, warning: str, kind: str) -> None:
        """A communicationWarning, as LM Studio sends for a message it cannot route; the
        call or channel it concerns gets no answer (the SDK logs the warning and waits)."""
        if self._warnings_sent >= _MAX_WARNINGS:
            return
        self._warnings_sent += 1
        await self.send({"type": "communicationWarning", "warning": warning, "kind": kind})

    async def send(self, msg: dict[str, Any], log_msg: dict[str, Any] | None = None) -> None:
        self.state.log.record(self.id, self.ns, "out", msg if log_msg is None else log_msg)
        await self.ws.send(_encode(msg), text=True)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (fault injection)."""
        self.state.log.record(self.id, self.ns, "event", {"type": "connectionDropped"})
        self.ws.transport.abort()

    async def run(self) -> None:
        try:
            auth = _decode(await self.ws.recv())
            self.state.log.record(self.id, self.ns, "in", auth)
            if isinstance(auth, dict):
                self.client_id = auth.get("clientIdentifier")
            await self.send({"success": True})
            async for raw in self.ws:
                try:
                    msg = _decode(raw)
                    if not isinstance(msg, dict):
                        raise msgspec.DecodeError("not an object")
                except msgspec.DecodeError:
                    await self.send({"type": "communicationWarning",
                                     "warning": "Received a frame that is not a JSON object"})
                    continue
                self._dispatch(msg)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            for task in list(self._tasks):
                task.cancel()
            self.state.log.record(self.id, self.ns, "event", {"type": "connectionClosed"})

    def _dispatch(self, msg: dict[str, Any]) -> None:
        self.state.log.record(self.id, self.ns, "in", msg)
        kind = msg.get("type")
        if kind == "rpcCall":
            self._spawn(self._rpc(msg))
        elif kind == "channelCreate":
            # Register before the task runs, so a cancel in the very next frame finds it.
            channel = Channel(self, msg.get("channelId", -1), msg.get("endpoint", ""),
                              msg.get("creationParameter"))
            self._channels[channel.id] = channel
            self._spawn(self._channel(channel))
        elif kind == "channelSend":
            target = self._channels.get(msg.get("channelId", -1))
            message = msg.get("message")
            if target is None or not isinstance(message, dict):
                return
            if message.get("type") == "cancel":
                target.cancel()
            else:
                target.inbox.put_nowait(message)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply_faults(self, endpoint: str) -> None:
        delay_s = self.state.faults.delay_for(endpoint)
        if delay_s:
            await asyncio.sleep(delay_s)
        title = self.state.faults.check_fail(endpoint)
        if title is not None:
            raise errors.simulated(title)

    async def _rpc(self, msg: dict[str, Any]) -> None:
        call_id, endpoint = msg.get("callId"), msg.get("endpoint", "")
        handler = self._rpcs.get(endpoint)
        if handler is None:
            await self.warn(f"Received rpcCall for unknown endpoint, endpoint = {endpoint}",
                            "rpcEndpointUnknown")
            return
        try:
            await self._apply_faults(endpoint)
            result = await handler(self, msg.get("parameter"))
        except SimError as exc:
            await self.send({"type": "rpcError", "callId": call_id, "error": exc.error})
            return
        reply: dict[str, Any] = {"type": "rpcResult", "callId": call_id}
        if result is not VOID:
            reply["result"] = result
        await self.send(reply, _compact(reply) if endpoint == "embedString" else None)

    async def _channel(self, channel: Channel) -> None:
        endpoint = channel.endpoint
        handler = self._channel_handlers.get(endpoint)
        if handler is None:  # LM Studio never opens it: no reply, the client's channel stays
            self._channels.pop(channel.id, None)
            await self.warn(f"Received channelCreate for unknown endpoint, endpoint = {endpoint}",
                            "channelEndpointUnknown")
            return
        try:
            await self._apply_faults(endpoint)
            await handler(channel)
        except SimError as exc:
            await channel.error(exc.error)
        finally:
            self._channels.pop(channel.id, None)
