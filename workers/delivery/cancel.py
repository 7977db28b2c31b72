"""The cancel watcher: maps every kind of revoke of a running job to a prediction cancel.

Every revoke (our API, `lmq cancel`, `celery control revoke`, Flower's Revoke/Terminate,
`AsyncResult.revoke()`, with or without `terminate=True`) adds the job id to the worker's
revoked set, `celery.worker.state.revoked`, in the worker's main thread. One watcher thread
per worker process checks that set for the jobs it is running and fires their
`CancelToken`: the token calls the cancel action the job attached (the prediction stream's
`cancel()`), or remembers the request until one is attached (a revoke during admission,
token counting or before the stream starts). `wake()` makes the watcher check at once: the
worker's `revoke` control command calls it once the ids are in the set
(`revoke_store.install`), and so does the pool's `terminate_job`. Otherwise it checks every
`LMQ_CANCEL_POLL_S` (a backstop: it polled every 20 ms before revokes woke it, 6 ms of an
idle worker's CPU a second).

The revoked set is Celery's `LimitedSet(maxlen=CELERY_WORKER_REVOKES_MAX (50000),
expires=CELERY_WORKER_REVOKE_EXPIRES (10800 s))`: bounded over a long run by both a count
and an age. Those two are Celery environment variables read when `celery.worker.state` is
imported; we keep Celery's defaults (see `revoked_set_bounds()`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from celery.worker import state as worker_state

log = logging.getLogger(__name__)


class CancelToken:
    """Cancellation of one running job; `requested` is set once the job was revoked."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.requested = threading.Event()
        self.requested_at: float | None = None
        self.reason: str | None = None  # why, when not a revoke (e.g. the job's time limit)
        self._action: Callable[[], object] | None = None
        self._lock = threading.Lock()

    def is_requested(self) -> bool:
        return self.requested.is_set()

    def attach(self, action: Callable[[], object]) -> None:
        """Run `action` on cancel; at once if the cancel already came."""
        with self._lock:
            self._action = action
            fire = self.requested.is_set()
        if fire:
            self._run(action)

    def detach(self) -> None:
        with self._lock:
            self._action = None

    def fire(self, reason: str | None = None) -> None:
        with self._lock:
            if self.requested.is_set():
                return
            self.requested_at = time.time()
            self.reason = reason
            self.requested.set()
            action = self._action
        if action is not None:
            self._run(action)

    def _run(self, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - a failed cancel must not kill the watcher
            log.warning("cancel of job %s failed: %s", self.job_id, exc)


class CancelWatcher:
    """A daemon thread that fires the tokens of revoked running jobs."""

    def __init__(self, poll_s: float) -> None:
        self.poll_s = poll_s
        self._tokens: dict[str, CancelToken] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lmq-cancel-watcher",
                                        daemon=True)
        self._thread.start()

    @contextmanager
    def watch(self, job_id: str) -> Iterator[CancelToken]:
        token = CancelToken(job_id)
        with self._lock:
            self._tokens[job_id] = token
        if job_id in worker_state.revoked:
            token.fire()
        try:
            yield token
        finally:
            with self._lock:
                if self._tokens.get(job_id) is token:
                    del self._tokens[job_id]

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def running(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def check(self) -> None:
        with self._lock:
            tokens = list(self._tokens.values())
        for token in tokens:
            if not token.is_requested() and token.job_id in worker_state.revoked:
                log.info("job %s revoked: cancelling its prediction", token.job_id)
                token.fire()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            try:
                self.check()
            except Exception:  # noqa: BLE001 - keep watching whatever happens
                log.exception("cancel watcher check failed")


_watcher: CancelWatcher | None = None
_watcher_lock = threading.Lock()


def watcher(poll_s: float | None = None) -> CancelWatcher:
    """The process's watcher (started on first use)."""
    global _watcher
    with _watcher_lock:
        if _watcher is None:
            if poll_s is None:
                from workers.settings import get_settings

                poll_s = get_settings().cancel_poll_s
            _watcher = CancelWatcher(poll_s)
        return _watcher


def wake() -> None:
    """Check the revoked set now (if a watcher runs)."""
    if _watcher is not None:
        _watcher.wake()


def revoked_set_bounds() -> tuple[int | None, float | None]:
    """(maxlen, expires_s) of this process's revoked set."""
    revoked = worker_state.revoked
    return revoked.maxlen, revoked.expires
