"""Which worker serves which model, in Redis: a fast answer for producers' served check.

Asking the workers (`control inspect active_queues`) waits a whole reply timeout (1 s)
because a broadcast cannot know how many workers will answer; a producer checking before
each submission would stall that long every few seconds. So each worker also registers
itself: member `<model>|<worker hostname>` of the sorted set `workers.keys.served()`, scored
by the time (epoch seconds) its registration lapses. A thread renews it every `RENEW_S`;
a killed worker's entry lapses after `LAPSE_S`; a clean stop removes it. While LM Studio is
lost (`workers.lmstudio.outage`), the worker consumes nothing and does not renew.

Producers trust a live entry, and ask the workers only when there is none
(`producers.served_models`), so a missing registration costs a slower answer, never a
wrong "not served".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from workers import keys

log = logging.getLogger(__name__)

RENEW_S = 2.0
LAPSE_S = 10.0


def member(model: str, worker: str) -> str:
    return f"{model}|{worker}"


def live_workers(client: redis.Redis, model: str, now: float | None = None) -> list[str]:
    """Workers whose registration for `model` has not lapsed."""
    now = time.time() if now is None else now
    prefix = member(model, "")
    entries = client.zrangebyscore(keys.served(), now, "+inf")
    return [e.decode()[len(prefix):] for e in entries if e.decode().startswith(prefix)]


class Registration:
    """Keeps one worker's entry alive while `serving()` is true."""

    def __init__(self, client: redis.Redis, model: str, worker: str,
                 serving: Callable[[], bool] = lambda: True) -> None:
        self.client = client
        self.member = member(model, worker)
        self.serving = serving
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lmq-served-registration",
                                        daemon=True)

    def start(self) -> Registration:
        self.renew()
        self._thread.start()
        return self

    def renew(self) -> None:
        try:
            if self.serving():
                now = time.time()
                with self.client.pipeline(transaction=False) as pipe:
                    pipe.zadd(keys.served(), {self.member: now + LAPSE_S})
                    pipe.zremrangebyscore(keys.served(), "-inf", now)  # lapsed entries
                    pipe.execute()
            else:
                self.client.zrem(keys.served(), self.member)
        except (redis.RedisError, OSError) as exc:  # producers then ask the workers
            log.debug("served registration not renewed: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        try:
            self.client.zrem(keys.served(), self.member)
        except (redis.RedisError, OSError) as exc:
            log.debug("served registration not removed (it lapses): %s", exc)

    def _run(self) -> None:
        while not self._stopped.wait(RENEW_S):
            self.renew()
