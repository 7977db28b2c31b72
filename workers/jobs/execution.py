"""Run one job inside a Celery task: parse, dedupe, run, and end in the right state.

End states:
* SUCCESS: the task returns the result dict (validated by the contract's result model).
* REVOKED, never run: the job was revoked before it started, by a revoke stored in Redis
  (`workers.delivery.revoke_store`): a REVOKED state already stored is kept as it is, and
  so is the FAILURE (JobExpiredError) of a job a producer ended as expired while it waited
  (`producers.job_expiry`).
* REVOKED: the job was revoked while it ran (cancel token fired, or its id is in the
  revoked set when it ends). The REVOKED state is stored with result
  `JobCancelledError("job <id> was cancelled", partial_result_dict_or_None)`, a
  `task-revoked` event is sent for Flower, and `celery.exceptions.Ignore` is raised so
  Celery neither overwrites the state nor retries; the message is acknowledged.
* requeued: LM Studio still unreachable after the job's retries, or already known lost when
  the job starts: `Reject(requeue=True)` puts the message back on its queue for another
  worker, and this worker stops consuming until LM Studio is back (`workers.lmstudio.outage`).
* FAILURE, never run: the job waited past its `expires_s` (`JobExpiredError`,
  `workers.jobs.deadline`); past its `time_limit_s` it is cancelled: REVOKED, with the
  reason in its `JobCancelledError`.
* FAILURE: any other error (bad job, LM Studio error); never retried by Celery. Bad jobs
  fail before anything reaches a prediction.
The fragment stream always gets its `{"end": state}` entry; a job that returns a result
sends it in the round trip that stores its final state (`workers.delivery.job_finish`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic
from celery import states
from celery.exceptions import Ignore, Reject
from celery.worker import state as worker_state

from workers.celery_config import STREAMED_HEADER
from workers.contract import RESULT_FOR_KIND
from workers.delivery import job_finish
from workers.delivery.result_store import next_attempt, take_attempt, take_revoked, take_stored
from workers.error import InvalidJobError, JobCancelledError, JobExpiredError, LMStudioLostError
from workers.jobs.context import JobContext
from workers.jobs.deadline import check_not_expired, time_limit
from workers.jobs.progress import FragmentStream, ProgressReporter
from workers.jobs.runtime import runtime
from workers.lmstudio.outage import Outage

log = logging.getLogger(__name__)
J = TypeVar("J", bound=pydantic.BaseModel)


def execute(task: Any, payload: Any, job_cls: type[J],
            run: Callable[[JobContext, J], dict[str, Any]]) -> dict[str, Any]:
    """The body of every lmq task."""
    job_id: str = task.request.id
    stored = take_stored(job_id)
    if stored is not None:
        return stored
    rt = runtime()
    stored_end = take_revoked(job_id)
    if stored_end is not None:
        _never_run(task, job_id, rt.redis, stored_end)
    job = parse_job(job_cls, payload)
    try:
        check_not_expired(job_id, job)
    except JobExpiredError:
        FragmentStream(rt.redis, job_id).end(states.FAILURE)
        raise
    if rt.outage is not None and rt.outage.down.is_set():
        log.info("job %s goes back to its queue: LM Studio is unreachable", job_id)
        raise Reject("LM Studio unreachable", requeue=True)
    ctx_started = time.time()
    attempt = take_attempt(job_id) or next_attempt(rt.redis, job_id, rt.settings.result_expires_s)
    with rt.watcher.watch(job_id) as token, time_limit(token, job.time_limit_s):
        ctx = JobContext(
            job_id=job_id, worker=task.request.hostname or rt.hostname,
            attempt=attempt,
            enqueued_at=getattr(job, "submitted_at", None), started_at=ctx_started,
            token=token, progress=ProgressReporter(task, job_id, rt.hostname, rt.redis),
            session=rt.session, gate=rt.gate, settings=rt.settings,
            priority=getattr(job, "priority", "normal"),
            streamed=bool(getattr(task.request, STREAMED_HEADER, False)))
        return _run(task, ctx, job, run, rt.outage)


def _never_run(task: Any, job_id: str, client: Any, stored_end: str) -> None:
    """A job revoked before it started (by a revoke stored in Redis): end it REVOKED, keeping
    an end already stored as it is (a REVOKED with its reason and partial result, or the
    FAILURE of a job a producer ended as expired)."""
    if not stored_end:
        error = JobCancelledError(f"job {job_id} was cancelled before it started", None)
        task.backend.store_result(job_id, error, states.REVOKED, request=task.request)
        stored_end = states.REVOKED
    FragmentStream(client, job_id).end(stored_end)
    try:
        if stored_end == states.FAILURE:  # Flower shows what the result backend holds
            task.send_event("task-failed", traceback=None, exception=(
                "JobExpiredError('no worker started it before its expires_s deadline')"))
        else:
            task.send_event("task-revoked", terminated=False, signum=None, expired=False)
    except Exception as exc:  # noqa: BLE001 - the state is stored; the event is a nicety
        log.warning("%s event for %s not sent: %s", stored_end, job_id, exc)
    raise Ignore()


def parse_job(job_cls: type[J], payload: Any) -> J:
    """The job contract, or InvalidJobError saying what is wrong with it."""
    if not isinstance(payload, dict):
        raise InvalidJobError(f"a job must be a JSON object ({job_cls.__name__}), "
                              f"got {type(payload).__name__}")
    try:
        return job_cls.model_validate(payload)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'job'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise InvalidJobError(f"invalid {job_cls.__name__}: {problems}") from None


def _run(task: Any, ctx: JobContext, job: Any,
         run: Callable[[JobContext, Any], dict[str, Any]],
         outage: Outage | None = None) -> dict[str, Any]:
    try:
        result = _run_closing(ctx, job, run)
    except JobCancelledError as exc:
        _revoked(task, ctx, exc.partial)
    except Exception as exc:
        if _was_revoked(ctx):
            _revoked(task, ctx, None)
        if isinstance(exc, LMStudioLostError) and outage is not None:
            _requeue(ctx, exc, outage)
        ctx.progress.stream.end(states.FAILURE)
        raise
    checked = RESULT_FOR_KIND[result["kind"]].model_validate(result).model_dump(mode="json")
    if _was_revoked(ctx):
        _revoked(task, ctx, checked)
    job_finish.ride(ctx.job_id, job_finish.StreamEnd(ctx.progress.stream))  # with the result
    return checked


def _requeue(ctx: JobContext, exc: LMStudioLostError, outage: Outage) -> None:
    """Give the job back to its queue; stop consuming until LM Studio is back."""
    ctx.progress.stream.reset(ctx.attempt + 1)  # the text so far is void
    outage.lost(str(exc))
    log.warning("job %s goes back to its queue: %s", ctx.job_id, exc)
    raise Reject(str(exc), requeue=True) from exc


def _run_closing(ctx: JobContext, job: Any,
                 run: Callable[[JobContext, Any], dict[str, Any]]) -> dict[str, Any]:
    """Run the job; afterwards no PROGRESS write may land (the final state comes next)."""
    try:
        return run(ctx, job)
    finally:
        ctx.progress.close()


def _was_revoked(ctx: JobContext) -> bool:
    return ctx.token.is_requested() or ctx.job_id in worker_state.revoked


def _revoked(task: Any, ctx: JobContext, partial: dict[str, Any] | None) -> None:
    """Store REVOKED with the partial result, tell Flower, and stop Celery touching it."""
    if partial is not None:
        partial = {**partial, "cancelled": True}
    reason = f": {ctx.token.reason}" if ctx.token.reason else ""
    error = JobCancelledError(f"job {ctx.job_id} was cancelled{reason}", partial)
    task.backend.store_result(ctx.job_id, error, states.REVOKED, request=task.request)
    ctx.progress.stream.end(states.REVOKED)
    try:
        task.send_event("task-revoked", terminated=False, signum=None, expired=False)
    except Exception as exc:  # noqa: BLE001 - the state is stored; the event is a nicety
        log.warning("task-revoked event for %s not sent: %s", ctx.job_id, exc)
    latency = (f" {time.time() - ctx.token.requested_at:.3f}s after the revoke"
               if ctx.token.requested_at else "")
    log.info("job %s cancelled%s; partial result stored", ctx.job_id, latency)
    raise Ignore()

