"""Celery's threads pool, made to support `revoke(terminate=True)`.

Celery's threads pool raises NotImplementedError from `terminate_job`, and its apply
results have no `terminate()`, so `revoke(id, terminate=True)` (Flower's Terminate button)
would surface errors in the worker. Threads cannot be killed, and need not be: before
terminating, Celery has already added the id to the revoked set, so `terminate_job` only
wakes the cancel watcher, which cancels the job's prediction; the job then ends as REVOKED
with its partial result. Selected with `worker_pool = "workers.delivery.pool:TaskPool"`.

`CancellingRequest` (the `Request` class of every lmq task) goes one step further: Celery's
own `Request.terminate` would also store REVOKED with `TaskRevokedError('terminated')` and
acknowledge the message at once, racing with the job's own REVOKED + partial result (a
producer polling in between would see the wrong result, and the job would still be running
on an acked message). Ours only wakes the watcher: the job stores its REVOKED state with the
partial result, sends `task-revoked`, and is acknowledged when it returns (`Ignore`).
"""

from __future__ import annotations

from typing import Any

from celery.concurrency import thread
from celery.worker.request import Request

from workers.delivery import cancel


class ApplyResult(thread.ApplyResult):
    def terminate(self, signal: Any = None) -> None:
        cancel.wake()


class TaskPool(thread.TaskPool):
    """Threads pool whose terminate triggers the cancel path instead of failing."""

    def terminate_job(self, pid: Any, signal: Any = None) -> None:
        cancel.wake()

    def resize(self, limit: int) -> None:
        """Set the thread count at start-up, before any job was applied.

        `ThreadPoolExecutor` starts its threads on demand, up to `_max_workers`: lowering it
        before the first submit is a real resize (no API does it). `limit` is what
        `celery inspect stats` reports as the pool's max-concurrency.
        """
        self.limit = limit
        self.executor._max_workers = limit

    def add_threads(self, extra: int) -> None:
        """Let `extra` more jobs run at once than `limit`, for the jobs a worker takes while
        its jobs wait for KV (`workers.admission.lookahead`). `limit` stays: it is what
        Celery sizes the prefetch by (`num_processes`, also when it restores the prefetch
        after a reconnect) and what `celery inspect stats` reports."""
        self.executor._max_workers = self.limit + extra

    def on_apply(self, target: Any, args: Any = None, kwargs: Any = None,
                 callback: Any = None, accept_callback: Any = None, **_: Any) -> ApplyResult:
        future = self.executor.submit(thread.apply_target, target, args, kwargs,
                                      callback, accept_callback)
        return ApplyResult(future)


class CancellingRequest(Request):
    """A task request whose terminate (revoke with terminate=True) is a cancel."""

    def terminate(self, pool: Any, signal: Any = None) -> None:
        cancel.wake()

