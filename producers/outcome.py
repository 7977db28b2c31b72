"""Turn a job's stored Celery state into a result object or the matching error.

Shared by `JobHandle.result()`, `JobQueue.fetch_results()` and the CLI, so every reader maps
REVOKED, FAILURE and foreign exceptions the same way.
"""

from __future__ import annotations

from typing import Any

from celery import states

from workers.contract import parse_result
from workers.error import JobCancelledError, JobFailedError, LmqError

FINISHED_STATES = frozenset(states.READY_STATES)


def as_job_error(job_id: str, state: str, exc: Any) -> LmqError:
    """The error a failed or revoked job raises for its producer."""
    if isinstance(exc, JobCancelledError):
        return exc
    if state == states.REVOKED:
        return JobCancelledError(f"job {job_id} was cancelled before it started", None)
    if isinstance(exc, LmqError):
        return exc
    if isinstance(exc, BaseException):
        return JobFailedError(f"job {job_id} failed: {type(exc).__name__}: {exc}")
    return JobFailedError(f"job {job_id} failed: {exc!r}")


def payload_of(job_id: str, state: str, result: Any) -> Any:
    """What `fetch_results` reports: the result dict, the error, the progress meta or None."""
    if state == states.SUCCESS:
        return result
    if state in (states.FAILURE, states.REVOKED):
        return as_job_error(job_id, state, result)
    return result if isinstance(result, dict) else None


def result_or_raise(job_id: str, state: str, result: Any) -> Any:
    """The contract result of a finished job, or raise its error."""
    if state == states.SUCCESS:
        if not isinstance(result, dict):
            raise JobFailedError(f"job {job_id} returned a non-result: {result!r:.200}")
        return parse_result(result)
    raise as_job_error(job_id, state, result)
