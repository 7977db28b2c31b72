"""Redis clients for a worker's per-job round trips: no liveness probe on a connection that
was handed back moments ago.

redis-py checks every connection it takes from its pool for unread data (a non-blocking
`recv`). In a worker, whose job threads, Celery's consumer and the SDK loop share one GIL,
that system call hands the GIL to another thread and waits to get it back: ~0.08 ms of the
worker's CPU per command, ~0.3 ms per chat job (ops/profile-worker-stress.md). A
connection handed back within the last second had its reply read in full (redis-py drops a
connection on any error mid-reply), so the probe finds nothing there. It matters for a
connection that sat idle, which the server may have closed (a restart, an idle timeout):
those are still probed. A restart within that second fails the next command on such a
connection, as it fails a command in flight; the worker's Redis calls already treat that
as a blip (admission retries in place; progress, start and metrics writes log and go on).
"""

from __future__ import annotations

import socket
import ssl
import time
import weakref
from typing import Any

import redis

from workers import green

FRESH_S = 1.0  # a connection handed back this recently is not probed


class FreshConnectionPool(redis.ConnectionPool):
    """redis-py's pool, probing only the connections that sat idle for `FRESH_S` or more."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handed_back: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def release(self, connection: Any) -> None:
        self._handed_back[connection] = time.monotonic()
        super().release(connection)

    def ensure_connection(self, connection: Any) -> None:
        handed_back = self._handed_back.get(connection)
        if handed_back is not None and time.monotonic() - handed_back < FRESH_S:
            connection.connect()  # a no-op unless redis-py dropped it after an error
            return
        super().ensure_connection(connection)


class YieldingConnectionPool(FreshConnectionPool):
    """A `FreshConnectionPool` whose connections, in a job greenlet, wait for a reply on the
    SDK loop (`_YieldingReads`): the worker's clients that jobs use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        base = self.connection_class
        self.connection_class = type(f"Yielding{base.__name__}", (_YieldingReads, base), {})


def client(url: str, *, yields: bool = False, **kwargs: Any) -> redis.Redis:
    """`redis.Redis.from_url(url, **kwargs)` on a `FreshConnectionPool`; with `yields`, a
    job greenlet waiting for a reply lets the SDK loop run meanwhile (`reads_yield`)."""
    pool_class = YieldingConnectionPool if yields else FreshConnectionPool
    return redis.Redis.from_pool(pool_class.from_url(url, **kwargs))


def reads_yield(client: redis.Redis) -> bool:
    """Whether `client`'s replies are awaited without blocking the SDK loop in a job
    greenlet: a BLPOP on it may wait for a job on the same loop."""
    return issubclass(client.connection_pool.connection_class, _YieldingReads)


class _YieldingReads:
    """A connection whose reads, in a job greenlet (`workers.green`), let the worker's SDK
    loop run until the reply is there, rather than blocking the loop's thread for the
    round trip, or for a BLPOP's whole wait. Not over TLS: an SSL socket may hold
    decrypted data its file descriptor does not show (those block as before)."""

    def _connect(self) -> Any:
        sock = super()._connect()  # type: ignore[misc]
        return sock if isinstance(sock, ssl.SSLSocket) else _GreenSocket(sock)


class _GreenSocket:
    """A socket whose blocking reads wait for data on the SDK loop (in a job greenlet)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def recv(self, *args: Any) -> bytes:
        self._wait_readable()
        return self._sock.recv(*args)

    def recv_into(self, *args: Any) -> int:
        self._wait_readable()
        return self._sock.recv_into(*args)

    def _wait_readable(self) -> None:
        timeout_s = self._sock.gettimeout()
        if timeout_s != 0 and green.in_job_greenlet():  # 0: redis-py's probe, no wait
            green.wait_readable(self._sock.fileno(), timeout_s)
