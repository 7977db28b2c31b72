"""LM Studio lost for good: give the jobs back and stop taking new ones until it returns.

A job whose LM Studio stays unreachable after `LMQ_JOB_MAX_RETRIES` retries
(`workers.jobs.context.with_retries`) does not end in FAILURE: its message goes back on its
queue (`celery.exceptions.Reject(requeue=True)`; with `task_acks_late` kombu restores the
unacknowledged message), so a worker of another LM Studio host runs it. The result store
stays right: the next start counts the next attempt and writes STARTED again; the fragment
stream gets a `{"reset": attempt}` entry (the text so far is void); metrics count nothing
for a requeued run (state REJECTED).

The first such job also marks the worker's `Outage` down and, with one WARNING line, stops
consuming the model's queue (`app.control.cancel_consumer(queue, destination=[hostname])`,
handled by this worker's own consumer thread). Jobs it had already received requeue at
once, without retries. A background thread reconnects with doubling backoff (at most
`LMQ_CONNECT_BACKOFF_MAX_S`); once LM Studio answers again it logs one INFO line and
consumes the queue again (`add_consumer`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from workers.error import LMStudioUnavailableError

log = logging.getLogger(__name__)

FIRST_PROBE_S = 1.0


class Outage:
    """Whether this worker's LM Studio is lost, and the reconnect loop that ends it."""

    def __init__(self, app: Any, hostname: str, queue: str,
                 reconnect: Callable[[], None], backoff_max_s: float) -> None:
        self.app = app
        self.hostname = hostname
        self.queue = queue
        self.reconnect = reconnect  # raises LMStudioUnavailableError while down
        self.backoff_max_s = backoff_max_s
        self.down = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def lost(self, reason: str) -> None:
        """A job gave up on LM Studio: stop consuming and start reconnecting (once)."""
        with self._lock:
            if self.down.is_set() or self._stopped.is_set():
                return
            self.down.set()
        log.warning("LM Studio lost (%s): jobs go back to %s for other workers; this "
                    "worker stops consuming it until LM Studio is reachable again",
                    reason, self.queue)
        self._control("cancel_consumer")
        threading.Thread(target=self._reconnect_loop, name="lmq-outage", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _reconnect_loop(self) -> None:
        delay_s = FIRST_PROBE_S
        while not self._stopped.wait(delay_s):
            try:
                self.reconnect()
            except LMStudioUnavailableError as exc:
                log.debug("LM Studio still unreachable: %s", exc)
                delay_s = min(delay_s * 2, self.backoff_max_s)
                continue
            except Exception:  # noqa: BLE001 - keep trying; say why once per failure
                log.warning("reconnect to LM Studio failed", exc_info=True)
                delay_s = min(delay_s * 2, self.backoff_max_s)
                continue
            self.down.clear()
            log.info("LM Studio is reachable again: consuming %s again", self.queue)
            self._control("add_consumer")
            return

    def _control(self, command: str) -> None:
        try:
            getattr(self.app.control, command)(self.queue, destination=[self.hostname],
                                               reply=False)
        except Exception as exc:  # noqa: BLE001 - requeueing still works without it
            log.warning("could not %s %s on %s: %s", command, self.queue, self.hostname, exc)
