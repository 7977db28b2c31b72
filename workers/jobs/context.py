"""What a job runner gets to work with, and the retry loop for transient LM Studio failures."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from workers import green
from workers.admission.seam import Gate
from workers.delivery.cancel import CancelToken
from workers.error import LMStudioLostError, LMStudioUnavailableError
from workers.jobs.progress import ProgressReporter
from workers.lmstudio.session import Session
from workers.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class JobContext:
    """One running job: its id, clocks, cancel token, progress, and the worker's parts."""

    job_id: str
    worker: str
    attempt: int
    enqueued_at: float | None
    started_at: float
    token: CancelToken
    progress: ProgressReporter
    session: Session
    gate: Gate
    settings: Settings
    priority: str = "normal"  # the job's: a high one goes first in admission's queue
    streamed: bool = False  # its producer streams the text (STREAMED_HEADER)

    def result_fields(self, cancelled: bool) -> dict[str, Any]:
        """The fields every result carries (model identity, timing, worker, attempt)."""
        finished = time.time()
        queue_wait = (None if self.enqueued_at is None
                      else round(max(0.0, self.started_at - self.enqueued_at), 6))
        model = self.session.model
        return {
            "job_id": self.job_id,
            "model": dict(model.identity) if model else {"model_key": "unknown"},
            "timing": {"enqueued_at": self.enqueued_at, "started_at": self.started_at,
                       "finished_at": finished, "queue_wait_s": queue_wait,
                       "run_s": round(finished - self.started_at, 6)},
            "worker": self.worker,
            "attempt": self.attempt,
            "cancelled": cancelled,
        }


def with_retries(ctx: JobContext, call: Callable[[], T], *, on_retry: Callable[[int], None]
                 | None = None) -> T:
    """Run `call`; on LMStudioUnavailableError reconnect and retry with doubling backoff.

    At most `settings.job_max_retries` retries; then the last LMStudioUnavailableError is
    raised, as LMStudioLostError when LM Studio cannot be reconnected at that point (the
    job is requeued for another worker) and as LMStudioUnavailableError when it can (it
    answers but keeps failing the call: the job fails). A cancel during the backoff
    re-raises at once (there is nothing to cancel).
    """
    delay_s = ctx.settings.job_retry_backoff_s
    for retry in range(ctx.settings.job_max_retries + 1):
        generation = ctx.session.generation
        try:
            return call()
        except LMStudioUnavailableError as exc:
            if retry >= ctx.settings.job_max_retries or ctx.token.is_requested():
                error = (LMStudioLostError if not ctx.token.is_requested()
                         and not _reconnects(ctx, generation) else LMStudioUnavailableError)
                raise error(
                    f"job {ctx.job_id}: LM Studio unavailable after {retry} retries: {exc}"
                ) from exc
            log.warning("job %s: %s; retry %d/%d in %.1fs", ctx.job_id, exc, retry + 1,
                        ctx.settings.job_max_retries, delay_s)
        if green.blocking(ctx.token.requested.wait, delay_s):
            raise LMStudioUnavailableError(f"job {ctx.job_id}: cancelled while reconnecting")
        delay_s *= 2
        if not _reconnects(ctx, generation):
            log.warning("job %s: reconnect to LM Studio failed", ctx.job_id)
        if on_retry is not None:
            on_retry(retry + 1)
    raise AssertionError("unreachable")


def _reconnects(ctx: JobContext, generation: int) -> bool:
    """Reconnect the session if its socket is dead; False if LM Studio is unreachable."""
    try:
        ctx.session.recover(generation)
    except LMStudioUnavailableError as exc:
        log.debug("job %s: reconnect failed: %s", ctx.job_id, exc)
        return False
    return True
