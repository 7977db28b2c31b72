"""`JobHandle`: one submitted job — its state, progress, result, text stream, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

import redis
from celery import Celery, states

from producers import fragment_reader, job_expiry, result_wait
from producers.cancellation import CancelOutcome
from producers.outcome import FINISHED_STATES, result_or_raise
from producers.queue_position import JobPosition
from workers.contract import PROGRESS, JobProgress
from workers.settings import Settings


class JobSource(Protocol):
    """What a handle reads its job through: `producers.JobQueue` (which imports this)."""

    settings: Settings
    app: Celery
    backend_client: redis.Redis
    store_client: redis.Redis

    def job_meta(self, job_id: str) -> dict[str, Any]: ...

    def cancel(self, job_id: str) -> CancelOutcome: ...

    def position(self, job_id: str) -> JobPosition | None: ...

    def job_record(self, job_id: str) -> dict[str, Any] | None: ...

_UNKNOWN = object()  # the handle has not looked its job's expiry up yet


class JobHandle:
    """A job by id. Cheap to create: it holds no Celery AsyncResult."""

    def __init__(self, job_id: str, queue: JobSource,
                 expires_at: float | None | object = _UNKNOWN) -> None:
        """`expires_at`: the job's `expires_s` deadline (epoch s) when the caller knows it
        (it just submitted the job); else the registry is asked once, when first needed."""
        self._id = job_id
        self._queue = queue
        self._expires_at = expires_at

    @property
    def id(self) -> str:
        return self._id

    def __repr__(self) -> str:
        return f"JobHandle({self._id!r})"

    def _meta(self) -> dict[str, Any]:
        return self._queue.job_meta(self._id)

    def status(self) -> str:
        """The Celery state: PENDING, STARTED, PROGRESS, SUCCESS, FAILURE, REVOKED, ..."""
        return str(self._meta().get("status", states.PENDING))

    def progress(self) -> JobProgress | None:
        """The job's progress while it runs (state PROGRESS), else None."""
        meta = self._meta()
        if meta.get("status") != PROGRESS or not isinstance(meta.get("result"), dict):
            return None
        return JobProgress.model_validate(meta["result"])

    def position(self) -> JobPosition | None:
        """While the job waits: the jobs ahead of it (by priority, then age) and an estimated
        start in seconds; None once a worker took it (or on a non-Redis broker)."""
        return self._queue.position(self._id)

    def expires_at(self) -> float | None:
        """When the job expires if no worker has started it by then (None: never)."""
        if self._expires_at is _UNKNOWN:
            self._expires_at = job_expiry.expires_at(self._queue.job_record(self._id))
        return self._expires_at  # type: ignore[return-value]

    def finished(self) -> bool:
        return self.status() in FINISHED_STATES

    def result(self, timeout: float | None = None) -> Any:
        """The result contract object; raises JobCancelledError (with .partial), the job's
        BadJobError, JobFailedError, JobExpiredError (no worker started it before its
        `expires_s`: it then never runs), or JobTimeoutError after `timeout` seconds."""
        meta = result_wait.wait_meta(self._queue.app, self._queue.backend_client, self._id,
                                     timeout, self.expires_at(),
                                     self._queue.subscriptions)
        return result_or_raise(self._id, meta["status"], meta.get("result"))

    def cancel(self) -> CancelOutcome:
        """Revoke the job: a queued job never runs, a running prediction is cancelled."""
        return self._queue.cancel(self._id)

    def stream(self, timeout: float | None = None,
               on_reset: Callable[[], None] | None = None) -> Iterator[str]:
        """The generated text as it arrives; ends when the job ends.

        If the worker lost LM Studio and restarted the prediction, `on_reset()` is called:
        the text yielded so far is void and the new text starts from the beginning.
        """
        seen_any = False
        for text in fragment_reader.read_fragments(self._queue.store_client, self._id,
                                                   self.finished, timeout, on_reset):
            seen_any = True
            yield text
        if not seen_any:
            yield from self._text_of_finished_job()

    def _text_of_finished_job(self) -> Iterator[str]:
        """The stream expired (or was never written): fall back to the stored content."""
        meta = self._meta()
        result = meta.get("result")
        if meta.get("status") == states.SUCCESS and isinstance(result, dict) \
                and result.get("content"):
            yield str(result["content"])

    async def aresult(self, timeout: float | None = None) -> Any:
        """`result()` for event-loop code; if the awaiting task is cancelled, so is the job."""
        try:
            expires_at = (self._expires_at if self._expires_at is not _UNKNOWN
                          else await asyncio.to_thread(self.expires_at))
            meta = await result_wait.await_meta(self._queue.app, self._queue.settings.backend_url,
                                                self._id, timeout,
                                                expires_at=expires_at)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            self.cancel()
            raise
        return result_or_raise(self._id, meta["status"], meta.get("result"))

    async def astream(self, timeout: float | None = None,
                      on_reset: Callable[[], None] | None = None) -> AsyncIterator[str]:
        async def finished() -> bool:
            return await asyncio.to_thread(self.finished)

        seen_any = False
        async for text in fragment_reader.aread_fragments(self._queue.settings.store_url,
                                                          self._id, finished, timeout,
                                                          on_reset):
            seen_any = True
            yield text
        if not seen_any:
            for text in await asyncio.to_thread(lambda: list(self._text_of_finished_job())):
                yield text
