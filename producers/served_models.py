"""Which models live workers serve, from the queues they consume (control inspect)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import Celery

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


class ServedModels:
    """A short-lived cache of model -> live workers; inspecting costs one reply timeout."""

    def __init__(self, app: Celery, *, ttl_s: float = 5.0, reply_timeout_s: float = 1.0,
                 broker_check: Callable[[], None] | None = None) -> None:
        self.app = app
        self.broker_check = broker_check
        self.ttl_s = ttl_s
        self.reply_timeout_s = reply_timeout_s
        self._served: dict[str, list[str]] = {}
        self._fetched_at = float("-inf")

    def get(self, *, refresh: bool = False) -> dict[str, list[str]]:
        if refresh or time.monotonic() - self._fetched_at > self.ttl_s:
            if self.broker_check is not None:
                self.broker_check()
            inspector = self.app.control.inspect(timeout=self.reply_timeout_s)
            self._served = models_from_queues(inspector.active_queues())
            self._fetched_at = time.monotonic()
        return {model: list(workers) for model, workers in self._served.items()}

    def serves(self, model: str) -> bool:
        """True if a live worker serves `model`; a miss re-inspects once before saying no."""
        return model in self.get() or model in self.get(refresh=True)
