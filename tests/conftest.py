"""Shared fixtures: a private redis-server, the simulator, real celery worker processes.

Fixtures start what they need on free ports and clean up after; on failure the worker's
log tail is attached to the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from producers.redis_server import RedisServer
from producers.worker_process import WorkerProcess
from tests.support.services import start_redis, start_worker
from tests.support.wait import wait_until

__all__ = ["wait_until"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture()
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for a test that stops, restarts or watches it whole
    (MONITOR). Modules that need it set up otherwise define their own `own_redis`."""
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean database on the session's private redis-server."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()  # our own server: safe to flush
    yield redis_server.url
    client.close()


@pytest.fixture()
def simulator() -> Iterator[object]:
    from simulator.testing import running_simulator

    with running_simulator() as sim:
        yield sim


@pytest.fixture()
def lmq_env(redis_url: str, simulator: object) -> dict[str, str]:
    """Environment for a worker or CLI subprocess pointed at this test's Redis and simulator."""
    return {
        "LMQ_BROKER_URL": redis_url,
        "LMQ_RESULT_BACKEND": redis_url,
        "LMQ_LMSTUDIO_HOST": simulator.host,  # type: ignore[attr-defined]
        "LMQ_GPU_MEMORY": "24GiB",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture()
def worker_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `celery -A workers worker` processes; all are stopped at teardown."""
    started: list[WorkerProcess] = []

    def factory(model: str, env: dict[str, str], **kwargs: object) -> WorkerProcess:
        worker = start_worker(model, env, **kwargs)
        started.append(worker)
        return worker

    yield factory
    failed = getattr(request.node, "rep_call", None)
    for worker in started:
        worker.stop()
        if failed is not None and failed.failed:
            print(f"\n--- log tail of {worker.hostname} ---\n{worker.log_tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
