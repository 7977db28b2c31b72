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

import time
import weakref
from typing import Any

import redis

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


def client(url: str, **kwargs: Any) -> redis.Redis:
    """`redis.Redis.from_url(url, **kwargs)` on a `FreshConnectionPool`."""
    return redis.Redis.from_pool(FreshConnectionPool.from_url(url, **kwargs))
