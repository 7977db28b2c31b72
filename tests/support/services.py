"""Starting the real parts tests need: redis-server, simulator, celery worker processes."""

from __future__ import annotations

import os

import pytest
from celery import Celery

from producers.redis_server import RedisNotFoundError, RedisServer
from producers.worker_process import WorkerProcess
from tests.support.wait import wait_until

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_service(reason: str) -> None:
    """A missing service skips on a laptop but fails in CI."""
    if IN_CI:
        pytest.fail(f"required service missing in CI: {reason}")
    pytest.skip(reason)


def start_redis(**kwargs: object) -> RedisServer:
    try:
        return RedisServer(**kwargs).start()  # type: ignore[arg-type]
    except RedisNotFoundError as exc:
        missing_service(str(exc))
        raise


def ping_worker(broker_url: str, hostname: str, timeout_s: float = 1.0) -> bool:
    app = Celery(broker=broker_url)
    try:
        replies = app.control.ping(destination=[hostname], timeout=timeout_s)
    finally:
        app.close()
    return any(hostname in reply for reply in replies)


def start_worker(model: str, env: dict[str, str], *, timeout_s: float = 60.0,
                 wait_ready: bool = True, **kwargs: object) -> WorkerProcess:
    worker = WorkerProcess(model, env, **kwargs).start()  # type: ignore[arg-type]
    if wait_ready:
        wait_until(
            lambda: _ready_or_dead(worker, env["LMQ_BROKER_URL"]), timeout=timeout_s,
            message=lambda: f"worker {worker.hostname} ready; log:\n{worker.log_tail()}",
        )
    return worker


def _ready_or_dead(worker: WorkerProcess, broker_url: str) -> bool:
    if not worker.is_running():
        raise AssertionError(f"worker exited early; log:\n{worker.log_tail()}")
    return ping_worker(broker_url, worker.hostname, timeout_s=0.5)
