"""Whether a live worker serves the model, found without holding up the first jobs.

`JobQueue`'s served check is a control inspect, which always waits its whole reply timeout
(1 s: it cannot know how many workers will answer). Before the first send, that second was
a third of a 1 MB corpus run. Here the jobs go out at once and the inspect runs in a
thread; a job that leaves PENDING also proves a worker serves the model. When the inspect
says no worker serves it and none of the jobs has left PENDING, the dispatcher takes its
jobs back out of the queue and raises ModelNotServedError, as a checked submit would have.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

from workers.contract import queue_name
from workers.error import ModelNotServedError


class ServedCheck:
    def __init__(self, queue: Any, model: str) -> None:
        self.queue = queue
        self.model = model
        self._served: bool | None = None  # the inspect's answer
        self._confirmed = False  # a job left PENDING
        self._error: BaseException | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="lmq-corpus-served").start()

    def _run(self) -> None:
        try:  # like ServedModels.serves: a miss in the cache re-inspects once
            served = self.model in self.queue.served_models()
            self._served = served or self.model in self.queue.served_models(refresh=True)
        except BaseException as exc:  # noqa: BLE001 - raised in the dispatching thread
            self._error = exc
        self._done.set()

    def confirm(self) -> None:
        """A job of ours left PENDING: some worker serves the model."""
        self._confirmed = True

    def raise_if_not_served(self) -> None:
        """Raise the inspect's error, or ModelNotServedError once it found no worker."""
        if self._confirmed or not self._done.is_set() or self._served:
            return
        if self._error is not None:
            raise self._error
        served = ", ".join(sorted(self.queue.served_models())) or "none"
        raise ModelNotServedError(
            f"no live worker serves model {self.model!r} (queue {queue_name(self.model)}); "
            f"served models: {served}. Start one with `LMQ_MODEL={self.model} celery -A "
            "workers worker`, or pass --enqueue-anyway")


def take_back(queue: Any, model: str, job_ids: Iterable[str]) -> list[str]:
    """Remove these jobs from the model's queue (those no worker took yet); their ids."""
    broker = getattr(queue.publisher, "broker", None)
    wanted = set(job_ids)
    if broker is None or not wanted:
        return []
    taken: list[str] = []
    key = queue_name(model)
    for raw in broker.lrange(key, 0, -1):
        job_id = json.loads(raw).get("headers", {}).get("id")
        if job_id in wanted and broker.lrem(key, 1, raw):
            taken.append(job_id)
    return taken
