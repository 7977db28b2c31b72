"""What the gateway asks the pool before queueing: is the model served, is its queue full.

    404  the model is unknown to the pool (no worker ever served it): names the served ones
    503  a worker served it but none is live now, or more than LMQ_MAX_QUEUED jobs wait
         (Retry-After: the client tries again instead of piling more onto the queue)
"""

from __future__ import annotations

import time

import redis

from producers.gateway.errors import not_found, unavailable
from producers.gateway.records import text
from producers.job_queue import JobQueue
from workers import keys
from workers.metrics import known_models, queue_length

SERVED_TTL_S = 0.5
# The queue length is read afresh at most this often while the queue is far below
# LMQ_MAX_QUEUED (reading it is two Redis round trips: every tenant's and priority's list);
# near the limit every request reads it.
QUEUE_TTL_S = 0.5


class PoolAccess:
    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.settings = queue.settings
        broker = self.settings.broker_url
        self._broker = (redis.Redis.from_url(broker)
                        if broker.startswith(("redis://", "rediss://")) else None)
        self._served: dict[str, list[str]] = {}
        self._served_at = float("-inf")
        self._waiting: dict[str, tuple[int, float, int]] = {}  # model: (read, at, sent since)

    def served(self) -> dict[str, list[str]]:
        """model -> live workers, from the workers' registrations (one round trip), read at
        most every SERVED_TTL_S: registrations themselves are renewed only every 2 s."""
        if time.monotonic() - self._served_at > SERVED_TTL_S:
            self._served, self._served_at = self._read_served(), time.monotonic()
        return {model: list(workers) for model, workers in self._served.items()}

    def _read_served(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for raw in self.queue.store_client.zrangebyscore(keys.served(), time.time(), "+inf"):
            model, _, worker = text(raw).rpartition("|")
            found.setdefault(model, []).append(worker)
        return found

    def check(self, model: str, *, queue_limit: bool = True) -> None:
        """Raise the ApiError a request for `model` gets now, if any (`queue_limit` False:
        not the LMQ_MAX_QUEUED check: a batch's lines wait in the queue by design)."""
        served = self.served()
        if model not in served:  # a worker may have started since: ask afresh
            self._served_at = float("-inf")
            served = self.served()
        if model not in served and model not in self.queue.served_models():
            self._not_served(model, sorted(served))
        if queue_limit and self._broker is not None:
            waiting = self._queue_length(model)
            if waiting > self.settings.max_queued:
                self._waiting.pop(model, None)  # the next request reads it afresh
                raise unavailable(f"{waiting} jobs wait for model {model!r}, more than "
                                  f"LMQ_MAX_QUEUED={self.settings.max_queued}: retry later",
                                  code="queue_full")

    def admits_from_cache(self, model: str) -> bool:
        """True when recent reads alone admit a request for `model` (served, its queue far
        below LMQ_MAX_QUEUED), counting it as `check` would: no Redis read, so the caller
        can stay on its event loop. False: call `check` (it reads, and may raise)."""
        served = self._served  # one read: a thread running `check` may replace it
        fresh = time.monotonic() - self._served_at <= SERVED_TTL_S
        if not fresh or model not in served:
            return False
        return self._broker is None or self._cached_length(model) is not None

    def _queue_length(self, model: str) -> int:
        """Jobs waiting for `model`: a recent read plus the jobs this gateway sent since
        (workers taking jobs meanwhile make it an overestimate), read afresh when that is
        older than QUEUE_TTL_S or over half of LMQ_MAX_QUEUED."""
        assert self._broker is not None
        cached = self._cached_length(model)
        if cached is not None:
            return cached
        read = queue_length(self._broker, model)
        self._waiting[model] = (read, time.monotonic(), 1)
        return read

    def _cached_length(self, model: str) -> int | None:
        """The recent read plus this request and those sent since, if fresh and far enough
        below the limit (the request is counted); else None."""
        read, at, sent = self._waiting.get(model, (0, float("-inf"), 0))
        if time.monotonic() - at < QUEUE_TTL_S and (read + sent) * 2 <= self.settings.max_queued:
            self._waiting[model] = (read, at, sent + 1)
            return read + sent
        return None

    def _not_served(self, model: str, served: list[str]) -> None:
        names = ", ".join(served) or "none"
        if model in known_models(self.queue.store_client):
            raise unavailable(f"no live worker serves model {model!r} right now (served: "
                              f"{names}); retry later, or start one with "
                              f"`LMQ_MODEL={model} celery -A workers worker`",
                              code="model_not_served")
        raise not_found(f"the model {model!r} does not exist in this pool; served models: "
                        f"{names}", code="model_not_found")

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()
