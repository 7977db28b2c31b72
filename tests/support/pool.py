"""A pool of real workers on one database of the session's redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from producers.local_pool import LocalPool, local_pool
from producers.redis_server import RedisServer


@contextmanager
def pool_on_database(redis_server: RedisServer, sim: object, database: int,
                     models: list[str]) -> Iterator[LocalPool]:
    """Workers for `models` on their own database of the session's redis-server."""
    url = redis_server.url.rsplit("/", 1)[0] + f"/{database}"
    with local_pool(url, sim.host, models) as started:  # type: ignore[attr-defined]
        yield started
