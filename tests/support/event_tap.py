"""Every task event message published on a Redis broker, as Flower's receiver gets it.

The tap listens to the event exchange on Redis itself (a pattern subscription, what
kombu's fanout is there): one PUBLISH holds one event, or a `task.multi` list of them.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis


@dataclass
class EventTap:
    """Every task event message published on the broker, with when it arrived."""

    messages: list[tuple[float, list[dict[str, Any]]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [event for _, batch in self.messages for event in batch]

    def seen(self, job_id: str) -> set[str]:
        return {e["type"] for e in self.events() if e.get("uuid") == job_id}


@contextmanager
def tapped(redis_url: str) -> Iterator[EventTap]:
    """An `EventTap` listening on `redis_url`'s server while the block runs."""
    tap = EventTap()
    pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("*celeryev/task.*")
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message is not None:
                body = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
                with tap.lock:
                    tap.messages.append((time.monotonic(), body if isinstance(body, list)
                                         else [body]))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        yield tap
    finally:
        stop.set()
        listener.join(timeout=5)
        pubsub.close()
