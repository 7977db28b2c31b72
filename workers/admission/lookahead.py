"""Bounded lookahead: a worker takes one more job from the broker for each of its jobs that
waits because its KV does not fit, so that smaller jobs behind it reach admission.

Why. A worker holds LMQ_SLOTS + LMQ_PREFETCH_THREADS jobs (one per thread, prefetch 1). On
`ops/bench_admission.py`'s 3/4-big flood those held jobs end up being big ones that wait
for the instance's cells beside one running big job, and the small jobs that would fit
beside it stay in the broker: the shared queue (`semaphore`) lets a small job overtake a
blocked big one, but only one that has reached it. Measured: 0.13-0.18 of slot-time idle
while a waiting job fit, 0.85-0.90 of what the cells allow (goal 0.9).

So while a job of this process waits for KV (its reservation did not fit the free cells,
or on per-token engines the free memory, when it queued), the worker may take one more
job: its prefetch count grows by one until the job is admitted or gives up, at most
`limit` at once (LMQ_ADMISSION_LOOKAHEAD). The pool has that many threads more to run them.
Where only slots bind (jobs wait for a free slot, never for cells) nothing changes, so the
broker's priority and tenant order is what it was. A high-priority job taken into the
lookahead goes before waiting normal and low ones in the shared queue (`semaphore`).

The cost, bounded by `limit`: jobs in a worker's lookahead wait for its instance even when
another instance (another host) has room, and while cells bind, a job of equal priority
taken later (another tenant's) waits behind them in the shared queue. Measured on the
3/4-big flood at load 7-9, 0 / 8 / 16 / 24: 0.87-0.89 / 0.90 / 0.90-0.91 / 0.93 of what
the cells allow (the broker hands out three big jobs per small one: finding the small ones
takes a long look); hence the default of 24.

This module knows nothing of Celery: `apply(extra)` is given by the worker's start-up
(`workers.lifecycle`: the consumer's prefetch count set to its base plus `extra`, on its
event loop). It is called with the new total under a lock, so calls never cross.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Lookahead"]


class Lookahead:
    """At most `limit` extra jobs at once, one per job of this process waiting for KV."""

    def __init__(self, limit: int, apply: Callable[[int], None] = lambda extra: None) -> None:
        self.limit = max(0, limit)
        self.apply = apply
        self._extra = 0
        self._lock = threading.Lock()

    @property
    def extra(self) -> int:
        """Extra jobs granted right now."""
        return self._extra

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """One extra job while the block runs, if under the limit."""
        took = self._step(1)
        try:
            yield
        finally:
            if took:
                self._step(-1)

    def _step(self, delta: int) -> bool:
        with self._lock:
            if delta > 0 and self._extra >= self.limit:
                return False
            self._extra += delta
            self.apply(self._extra)
        return True
