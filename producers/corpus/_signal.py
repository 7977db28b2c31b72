"""Wake the dispatcher as soon as one of its jobs stores a state, instead of sleeping.

Celery's Redis backend publishes every state it stores on a channel named like the result
key (the workers' PROGRESS writer does the same). The dispatcher subscribes to the channels
of its jobs in flight (a bounded number: `max_in_flight`) and waits on them between polls;
it still reads the states with one MGET, and polls at least every `timeout_s` in case a
message was missed. If the subscription fails (say Redis restarted), it just sleeps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import redis

from producers.result_wait import result_key

log = logging.getLogger(__name__)


class ResultSignals:
    def __init__(self, queue: Any) -> None:
        self._app = queue.app
        self._pubsub: Any = queue.backend_client.pubsub(ignore_subscribe_messages=True)

    def watch(self, job_ids: Iterable[str]) -> None:
        """Subscribe before sending, so that no stored state goes unseen."""
        self._call("subscribe", [result_key(self._app, job_id) for job_id in job_ids])

    def forget(self, job_ids: Iterable[str]) -> None:
        self._call("unsubscribe", [result_key(self._app, job_id) for job_id in job_ids])

    def wait(self, timeout_s: float) -> None:
        """Return when a watched job published a state, or after `timeout_s`."""
        if self._pubsub is None:
            time.sleep(timeout_s)
            return
        try:
            message = self._pubsub.get_message(timeout=timeout_s)
            while message is not None:  # drain: one MGET reads them all
                message = self._pubsub.get_message(timeout=0)
        except redis.RedisError as exc:
            self._give_up(exc)

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()

    def _call(self, command: str, channels: list[str]) -> None:
        if self._pubsub is None or not channels:
            return
        try:
            getattr(self._pubsub, command)(*channels)
        except redis.RedisError as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        log.info("result notifications off, polling instead: %s", exc)
        self.close()
        self._pubsub = None
