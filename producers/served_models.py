"""Which models live workers serve: from their registrations in Redis when one is live
(`workers.served_registry`, one round trip), else from the queues they consume (control
inspect, which waits a whole reply timeout)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import Celery
from celery.app.control import Inspect

from workers import served_registry
from workers.contract import model_from_queue


def models_from_queues(
    active_queues: dict[str, list[dict[str, Any]]] | None,
) -> dict[str, list[str]]:
    served: dict[str, list[str]] = {}
    for worker, queues in sorted((active_queues or {}).items()):
        for queue in queues or []:
            model = model_from_queue(str(queue.get("name", "")))
            if model:
                served.setdefault(model, []).append(worker)
    return served


@contextmanager
def fresh_inspector(app: Celery, **options: Any) -> Iterator[Inspect]:
    """`app.control.inspect` over a new broker connection, closed afterwards.

    Not one from the app's pool: kombu keeps connection pools per broker URL for the whole
    process, so after a Redis restart every JobQueue of the process would first get a
    connection whose socket the old server closed, and the reply read would fail.
    """
    with app.connection_for_write() as connection:
        yield app.control.inspect(connection=connection, **options)


class ServedModels:
    """A short-lived cache of model -> live workers; inspecting costs one reply timeout."""

    def __init__(self, app: Celery, *, ttl_s: float = 5.0, reply_timeout_s: float = 1.0,
                 broker_check: Callable[[], None] | None = None,
                 registry: Any = None) -> None:
        self.app = app
        self.registry = registry  # a redis.Redis on the store, or None: inspect only
        self.broker_check = broker_check
        self.ttl_s = ttl_s
        self.reply_timeout_s = reply_timeout_s
        self._served: dict[str, list[str]] = {}
        self._fetched_at = float("-inf")

    def get(self, *, refresh: bool = False) -> dict[str, list[str]]:
        if refresh or time.monotonic() - self._fetched_at > self.ttl_s:
            if self.broker_check is not None:
                self.broker_check()
            with fresh_inspector(self.app, timeout=self.reply_timeout_s) as inspector:
                self._served = models_from_queues(inspector.active_queues())
            self._fetched_at = time.monotonic()
        return {model: list(workers) for model, workers in self._served.items()}

    def serves(self, model: str) -> bool:
        """True if a live worker serves `model`: a live registration, else the cached
        inspect, and a miss there re-inspects once before saying no."""
        return (self._registered(model) or model in self.get()
                or model in self.get(refresh=True))

    def _registered(self, model: str) -> bool:
        if self.registry is None:
            return False
        for _ in range(2):  # a pooled socket a restarted server closed fails once
            try:
                return bool(served_registry.live_workers(self.registry, model))
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            except redis.RedisError:
                break
        return False  # Redis trouble: ask the workers instead
