"""The worker's Redis pool on a real redis-server: a connection handed back moments ago is
used without redis-py's liveness probe; one that sat idle is probed, and replaced when the
server closed it."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from workers import redis_pool
from workers.celery import create_app
from workers.settings import Settings


def _counting_probes(client: redis.Redis) -> list[int]:
    """Take the pool's one connection and count the probes (`can_read`) made on it."""
    connection = client.connection_pool.get_connection()
    client.connection_pool.release(connection)
    probes = [0]
    probe = connection.can_read

    def counted(*args: Any, **kwargs: Any) -> bool:
        probes[0] += 1
        return probe(*args, **kwargs)

    connection.can_read = counted  # type: ignore[method-assign]
    return probes


def test_a_connection_handed_back_just_now_is_not_probed(redis_url, monkeypatch):
    monkeypatch.setattr(redis_pool, "FRESH_S", 0.2)
    client = redis_pool.client(redis_url)
    client.ping()
    probes = _counting_probes(client)
    for i in range(20):
        client.set("k", i)
        with client.pipeline() as pipe:
            pipe.get("k").incr("n").execute()
    assert probes[0] == 0
    time.sleep(0.3)
    assert client.get("k") == b"19"
    assert probes[0] == 1  # idle past FRESH_S: probed before use
    client.close()


def test_an_idle_connection_the_server_closed_is_replaced(redis_url, monkeypatch):
    monkeypatch.setattr(redis_pool, "FRESH_S", 0.05)
    client, admin = redis_pool.client(redis_url), redis.Redis.from_url(redis_url)
    before = client.client_id()
    assert admin.client_kill_filter(_id=before) == 1
    time.sleep(0.1)
    assert client.client_id() != before  # no ConnectionError: probed, reconnected
    client.close()
    admin.close()


def test_the_worker_result_backend_uses_the_pool(redis_url):
    backend = create_app(Settings(broker_url=redis_url, result_backend=redis_url)).backend
    assert isinstance(backend.client.connection_pool, redis_pool.FreshConnectionPool)


def test_a_plain_pool_would_probe_every_command(redis_url):
    """The control: what the worker's pool saves, on the same server."""
    client = redis.Redis.from_url(redis_url)
    client.ping()
    probes = _counting_probes(client)
    for i in range(5):
        client.set("k", i)
    assert probes[0] == 5
    client.close()


@pytest.mark.parametrize("url_tail", ["", "?socket_timeout=5"])
def test_the_client_takes_redis_py_url_options(redis_url, url_tail):
    client = redis_pool.client(redis_url + url_tail, health_check_interval=30)
    assert client.ping() is True
    client.close()


def test_a_yielding_client_waits_for_a_blpop_on_the_loop(redis_url):
    """Two jobs on one loop: one in a BLPOP on a yielding client, the other pushing what it
    waits for. Over a blocking client the BLPOP would hold the loop's thread and the push
    would come only after its timeout."""
    import asyncio
    import concurrent.futures

    from workers import green
    from workers.lmstudio.loop import SdkLoop

    yielding = redis_pool.client(redis_url, yields=True)
    assert redis_pool.reads_yield(yielding)
    assert not redis_pool.reads_yield(redis_pool.client(redis_url))
    got: list[Any] = []

    def waiter() -> None:
        got.append(yielding.blpop(["wake"], timeout=5))

    def pusher() -> None:
        green.await_(asyncio.sleep(0.1))
        yielding.rpush("wake", "ok")

    loop = SdkLoop(name="test-yielding-loop")
    try:
        runner = green.GreenletRunner(loop.loop, 2)
        started = time.monotonic()
        ended = [runner.spawn(waiter), runner.spawn(pusher)]
        concurrent.futures.wait(ended, 10)
        assert got == [(b"wake", b"ok")]
        assert time.monotonic() - started < 2
    finally:
        loop.stop()
    yielding.set("k", "v")  # outside a greenlet it is an ordinary client
    assert yielding.get("k") == b"v"
