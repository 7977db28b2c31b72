"""Wake the dispatcher as soon as one of its jobs stores a state, instead of sleeping.

Celery's Redis backend publishes every state it stores on a channel named like the result
key, the stored value itself (the workers' PROGRESS writer does the same). The dispatcher
subscribes to the channels of its jobs in flight (a bounded number: `max_in_flight`) and
waits on them between polls. A job whose SUCCESS arrived this way is not read again (its
vectors are most of what a run moves through Redis: reading them twice, here and by MGET,
was ~15% of the dispatching thread's samples); the others are read with one MGET, at least
every `timeout_s` in case a message was missed. If the subscription fails (say Redis
restarted), it just sleeps, and every state is read.
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
        self._jobs: dict[bytes, str] = {}  # watched channel -> its job id
        self._published: dict[str, bytes] = {}  # job id -> the last state it published

    def watch(self, job_ids: Iterable[str]) -> None:
        """Subscribe before sending, so that no stored state goes unseen."""
        channels = {result_key(self._app, job_id): job_id for job_id in job_ids}
        self._jobs.update((channel.encode(), job_id) for channel, job_id in channels.items())
        self._call("subscribe", list(channels))

    def forget(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        channels = [result_key(self._app, job_id) for job_id in ids]
        for channel, job_id in zip(channels, ids, strict=True):
            self._jobs.pop(channel.encode(), None)
            self._published.pop(job_id, None)
        self._call("unsubscribe", channels)

    def published(self) -> dict[str, bytes]:
        """The stored values (encoded metas) watched jobs published since the last call,
        the last one of each job (messages already in are read first, without waiting)."""
        self._receive(0)
        found, self._published = self._published, {}
        return found

    def wait(self, timeout_s: float) -> None:
        """Return when a watched job published a state, or after `timeout_s`."""
        if self._pubsub is None:
            time.sleep(timeout_s)
            return
        self._receive(timeout_s)

    def _receive(self, timeout_s: float) -> None:
        """Keep the messages in, the first awaited up to `timeout_s`."""
        if self._pubsub is None:
            return
        try:
            message = self._pubsub.get_message(timeout=timeout_s)
            while message is not None:  # drain: every state published so far
                job_id = self._jobs.get(message.get("channel"))
                if job_id is not None and message.get("type") == "message":
                    self._published[job_id] = message["data"]
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
