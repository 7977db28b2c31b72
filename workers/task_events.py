"""Task events leave the worker in batches: at most one PUBLISH per `FLUSH_INTERVAL_S`.

Celery buffers a worker's task events (received, started, succeeded, ...) and flushes the
buffer at the consumer loop's next tick, as one `task.multi` message that every
`EventReceiver`, Flower's included, unpacks. Under load a tick rarely holds more than one
event: the worker sent about three PUBLISHes per job, and each event from a job thread also
woke the consumer loop through its waker pipe. Here a flush comes at the earliest
`FLUSH_INTERVAL_S` after the previous one, and a thread that sends an event while a flush
is pending neither wakes the loop nor schedules another. An event alone still leaves at
once; a burst waits at most `FLUSH_INTERVAL_S`, which no dashboard shows.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from vine import promise

FLUSH_INTERVAL_S = 0.05


class EventFlusher:
    """Flushes a consumer's event buffer on its hub, throttled (`on_buffered` from any
    thread; the rest runs on the hub)."""

    def __init__(self, hub: Any, flush: Any) -> None:
        self._hub = hub
        self._flush = flush
        self._lock = threading.Lock()
        self._pending = False
        self._flushed_at = 0.0
        self._promise = promise(self._on_hub)  # one object: the hub's ready set dedupes it

    def on_buffered(self) -> None:
        with self._lock:
            if self._pending:
                return
            self._pending = True
        self._hub.call_soon(self._promise)

    def _on_hub(self) -> None:
        wait = self._flushed_at + FLUSH_INTERVAL_S - time.monotonic()
        if wait > 0:
            self._hub.call_later(wait, self._promise)
            return
        with self._lock:  # before the flush takes its copy: later events schedule anew
            self._pending = False
        self._flushed_at = time.monotonic()
        self._flush()
