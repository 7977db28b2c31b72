"""A job's deadlines: `expires_s` (never start late) and `time_limit_s` (never run long).

* expired: checked when a worker takes the job, before anything reaches LM Studio; the job
  fails with `JobExpiredError` and never runs. A job no worker takes is ended by whoever
  waits on it once its deadline passed (`producers.job_expiry`: FAILURE with the same
  error, and a stored revoke marker, so the worker that takes it later keeps that state).
* time limit: a timer from the job's start fires its cancel token with the reason, which
  cancels the prediction as a revoke does; the job ends REVOKED with its partial result,
  the reason in its `JobCancelledError`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from workers.delivery.cancel import CancelToken
from workers.error import JobExpiredError


def check_not_expired(job_id: str, job: Any, now: float | None = None) -> None:
    """Raise JobExpiredError if `job` waited longer than its `expires_s`."""
    expires_s = getattr(job, "expires_s", None)
    submitted_at = getattr(job, "submitted_at", None)
    if expires_s is None or submitted_at is None:
        return
    waited_s = (now or time.time()) - submitted_at
    if waited_s > expires_s:
        raise JobExpiredError(
            f"job {job_id} expired: not started within its expires_s of {expires_s:g}s "
            f"(it waited {waited_s:.1f}s), so it never ran; submit it again, or with a "
            f"longer expires_s")


@contextmanager
def time_limit(token: CancelToken, limit_s: float | None) -> Iterator[None]:
    """Fire `token` after `limit_s` seconds unless the block ended first."""
    if limit_s is None:
        yield
        return
    reason = f"time limit of {limit_s:g}s reached (time_limit_s)"
    timer = threading.Timer(limit_s, token.fire, kwargs={"reason": reason})
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
