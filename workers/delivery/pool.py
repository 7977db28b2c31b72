"""The worker's pool: each job runs as a greenlet on the SDK loop, and revoke(terminate=True)
is a cancel.

Why greenlets (issue 22): with Celery's threads pool every job ran in a thread of its
own, and its prediction on the SDK loop's thread; in one process the job threads, Celery's
consumer and the loop then waited for one another's GIL at every blocking call, and a
job crossed threads at least twice. Here the whole job, Celery's tracer included, runs on
the loop's thread as a greenlet (`workers.green`): where it waits for the SDK it yields to
the loop. A stock Celery worker set up this way spent 0.78-0.85x the CPU per job of the
threads pool and ran 1.12-1.26x the jobs per second at the stress timing
(ops/profile-worker-stress.md, "2026-12-06 (late)"). `limit` jobs run at once (Celery's
concurrency: LMQ_CONCURRENCY, else LMQ_SLOTS + LMQ_PREFETCH_THREADS), plus the lookahead's
(`add_threads`); the jobs beyond wait in order.

The LM Studio step (`workers.lifecycle`) gives the pool its loop (`attach`) before the
consumer takes a job. A pool without one (used on its own, in a test) runs each job in a
thread, and the job's waits then simply block.

Terminate: threads and greenlets cannot be killed, and need not be: before terminating,
Celery has already added the id to the revoked set, so `terminate_job` only wakes the
cancel watcher, which cancels the job's prediction; the job then ends as REVOKED with its
partial result. `CancellingRequest` (the `Request` class of every lmq task) goes one step
further: Celery's own `Request.terminate` would also store REVOKED with
`TaskRevokedError('terminated')` and acknowledge the message at once, racing with the
job's own REVOKED + partial result (a producer polling in between would see the wrong
result, and the job would still be running on an acked message). Ours only wakes the
watcher: the job stores its REVOKED state with the partial result, sends `task-revoked`,
and is acknowledged when it returns (`Ignore`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

from celery.concurrency.base import BasePool, apply_target
from celery.worker.request import Request

from workers import green
from workers.delivery import cancel

_STOP_POLL_S = 0.05


class ApplyResult:
    """A job given to the pool: done when its body returned."""

    def __init__(self, done: concurrent.futures.Future[Any]) -> None:
        self._done = done

    def wait(self, timeout: float | None = None) -> None:
        concurrent.futures.wait([self._done], timeout)

    def terminate(self, signal: Any = None) -> None:
        cancel.wake()


class TaskPool(BasePool):
    """Jobs as greenlets on the SDK loop; terminate triggers the cancel path."""

    body_can_be_buffer = True
    signal_safe = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra = 0
        self._runner: green.GreenletRunner | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the jobs on `loop` (the worker's SDK loop), from now on."""
        self._runner = green.GreenletRunner(loop, self.limit + self.extra)

    def resize(self, limit: int) -> None:
        """Set how many jobs run at once, at start-up. `limit` is what Celery sizes the
        prefetch by and what `celery inspect stats` reports as max-concurrency."""
        self.limit = limit
        self._set_runner_limit()

    def add_threads(self, extra: int) -> None:
        """Let `extra` more jobs run at once than `limit`, for the jobs a worker takes while
        its jobs wait for KV (`workers.admission.lookahead`). `limit` stays: it is what
        Celery sizes the prefetch by (`num_processes`, also when it restores the prefetch
        after a reconnect) and what `celery inspect stats` reports."""
        self.extra = extra
        self._set_runner_limit()

    def _set_runner_limit(self) -> None:
        if self._runner is not None:
            self._runner.limit = self.limit + self.extra  # read on the loop: one int store

    def terminate_job(self, pid: Any, signal: Any = None) -> None:
        cancel.wake()

    def on_apply(self, target: Any, args: Any = None, kwargs: Any = None,
                 callback: Any = None, accept_callback: Any = None, **_: Any) -> ApplyResult:
        job = (apply_target, target, args, kwargs, callback, accept_callback)
        if self._runner is not None:
            return ApplyResult(self._runner.spawn(*job))
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def in_thread() -> None:
            try:
                apply_target(*job[1:])
            finally:
                done.set_result(None)

        threading.Thread(target=in_thread, name="lmq-job", daemon=True).start()
        return ApplyResult(done)

    def on_stop(self) -> None:
        """Warm shutdown: the running jobs finish; those not started yet stay unacknowledged
        (redelivered), as Celery's threads pool cancels its queued ones."""
        if self._runner is not None:
            self._runner.drop_waiting()
            while self._runner.busy():
                time.sleep(_STOP_POLL_S)
        super().on_stop()

    def _get_info(self) -> dict[str, Any]:
        info = super()._get_info()
        info.update({"max-concurrency": self.limit,
                     "running": self._runner.running if self._runner is not None else 0})
        return info


class CancellingRequest(Request):
    """A task request whose terminate (revoke with terminate=True) is a cancel."""

    def terminate(self, pool: Any, signal: Any = None) -> None:
        cancel.wake()
