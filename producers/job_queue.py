"""`JobQueue`: validate jobs, send them by task name to their model's queue, read results."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import redis
from celery import states

from producers import cancellation, job_expiry, job_registry, queue_position
from producers.cancellation import BulkCancel, CancelOutcome
from producers.celery_app import producer_app
from producers.job_building import (
    CheckedConfigs,
    check_deadlines,
    check_limits,
    check_priority,
    check_tenant,
    coerce_job,
    make_config,
    make_job,
)
from producers.job_handle import JobHandle
from producers.outcome import payload_of
from producers.publisher import Publisher
from producers.queue_position import JobPosition
from producers.redis_server import redis_answers
from producers.result_wait import Subscriptions, decode_meta, result_key
from producers.served_models import ServedModels
from producers.settings_view import mask_url
from workers.contract import ChatJob, CompletionJob, EmbeddingJob, Job, queue_name
from workers.error import InvalidJobError, ModelNotServedError
from workers.metrics import count_cancelled_before_start
from workers.settings import Settings, get_settings

if TYPE_CHECKING:  # the SDK loads with the first job, not with `import producers`
    from producers.prediction_config import ConfigInput as Config


class JobQueue:
    """The producer API: `JobQueue().chat(model, prompt).result()`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.app = producer_app(self.settings)
        self.backend_client = redis.Redis.from_url(self.settings.backend_url)
        self.subscriptions = Subscriptions(self.backend_client)  # handles' result waits
        self.store_client = redis.Redis.from_url(self.settings.store_url)
        self._served = ServedModels(self.app, broker_check=self._broker_answers,
                                    registry=self.store_client)
        self._publisher: Publisher | None = None
        self._broker_seen = False

    def _broker_answers(self) -> None:
        """Fail in a second, not after kombu's connection retries, when Redis is down."""
        if self._broker_seen or not self.settings.broker_url.startswith(("redis://", "rediss://")):
            return
        if not redis_answers(self.settings.broker_url, timeout_s=2.0):
            raise redis.ConnectionError(f"no answer from {mask_url(self.settings.broker_url)}")
        self._broker_seen = True

    # --- submitting ---------------------------------------------------------------------

    def chat(self, model: str, prompt_or_messages: Any, *, system_prompt: str | None = None,
             tools: list[dict[str, Any]] | None = None, config: Config = None,
             response_format: Any = None, enqueue_anyway: bool = False,
             job_id: str | None = None, batch_id: str | None = None,
             priority: str = "normal", expires_s: float | None = None,
             time_limit_s: float | None = None, tenant: str | None = None,
             streamed: bool = False) -> JobHandle:
        """`config`: the SDK's prediction config; `response_format`: as `respond()` takes it
        (a JSON schema dict or a pydantic model class), the result's `parsed` is filled.
        `priority`: "high", "normal" or "low" (workers take the most urgent job first);
        `expires_s`: never start it later than this after submission (JobExpiredError);
        `time_limit_s`: cancel it this long after it started (REVOKED, partial result);
        `streamed`: you will read its text as it comes (`handle.stream()`): the worker
        publishes the first fragment as soon as it has it, then the text every 50 ms
        (without it, `stream()` still gets all the text, in pieces up to a second old)."""
        job = make_job("chat", {"model": model, "messages": prompt_or_messages,
                                "system_prompt": system_prompt, "tools": tools,
                                "config": make_config(config, response_format),
                                "batch_id": batch_id, "priority": priority,
                                "expires_s": expires_s, "time_limit_s": time_limit_s})
        return self.submit(job, enqueue_anyway=enqueue_anyway, job_id=job_id, tenant=tenant,
                           streamed=streamed)

    def complete(self, model: str, prompt: str, *, config: Config = None,
                 response_format: Any = None, enqueue_anyway: bool = False,
                 job_id: str | None = None, batch_id: str | None = None,
                 priority: str = "normal", expires_s: float | None = None,
                 time_limit_s: float | None = None, tenant: str | None = None,
                 streamed: bool = False) -> JobHandle:
        """As `chat`, for a plain-text prompt."""
        job = make_job("completion", {"model": model, "prompt": prompt,
                                      "config": make_config(config, response_format),
                                      "batch_id": batch_id, "priority": priority,
                                      "expires_s": expires_s, "time_limit_s": time_limit_s})
        return self.submit(job, enqueue_anyway=enqueue_anyway, job_id=job_id, tenant=tenant,
                           streamed=streamed)

    def embed(self, model: str, texts: str | Sequence[str], *, enqueue_anyway: bool = False,
              job_id: str | None = None, batch_id: str | None = None,
              priority: str = "normal", expires_s: float | None = None,
              time_limit_s: float | None = None, tenant: str | None = None) -> JobHandle:
        texts = [texts] if isinstance(texts, str) else list(texts)
        job = make_job("embedding", {"model": model, "texts": texts, "batch_id": batch_id,
                                     "priority": priority, "expires_s": expires_s,
                                     "time_limit_s": time_limit_s})
        return self.submit(job, enqueue_anyway=enqueue_anyway, job_id=job_id, tenant=tenant)

    def submit(self, job: Job | dict[str, Any], *, enqueue_anyway: bool = False,
               job_id: str | None = None, priority: str | None = None,
               expires_s: float | None = None, time_limit_s: float | None = None,
               tenant: str | None = None, streamed: bool = False) -> JobHandle:
        ids = [job_id] if job_id else None
        return self.submit_many([job], enqueue_anyway=enqueue_anyway, job_ids=ids,
                                priority=priority, expires_s=expires_s,
                                time_limit_s=time_limit_s, tenant=tenant,
                                streamed=streamed)[0]

    def submit_many(self, jobs: Iterable[Job | dict[str, Any]], *, enqueue_anyway: bool = False,
                    batch_id: str | None = None, job_ids: Sequence[str] | None = None,
                    priority: str | None = None, expires_s: float | None = None,
                    time_limit_s: float | None = None, tenant: str | None = None,
                    checked: bool = False, streamed: bool = False) -> list[JobHandle]:
        """Validate every job, then publish them all in pipelined round trips. `priority`,
        `expires_s`, `time_limit_s` and `tenant` (if given) replace each job's own; a job
        with no tenant gets LMQ_TENANT's. `checked=True`: the jobs are contract objects
        that were checked already, configs against the SDK's schema and sizes against these
        limits (the gateway's batch files, validated at upload), so they are sent as they
        are. `streamed`: as `chat`'s."""
        pairs = self.prepare(jobs, enqueue_anyway=enqueue_anyway, batch_id=batch_id,
                             job_ids=job_ids, priority=priority, expires_s=expires_s,
                             time_limit_s=time_limit_s, tenant=tenant, checked=checked)
        self.publisher.publish(pairs, streamed=streamed)
        return self.handles(pairs)

    def prepare(self, jobs: Iterable[Job | dict[str, Any]], *, enqueue_anyway: bool = False,
                batch_id: str | None = None, job_ids: Sequence[str] | None = None,
                priority: str | None = None, expires_s: float | None = None,
                time_limit_s: float | None = None, tenant: str | None = None,
                checked: bool = False) -> list[tuple[str, Job]]:
        """`submit_many`'s checks, and the `(job_id, job)` pairs as they are sent (submit
        time, priority, deadlines, tenant set): what a publisher takes. `handles(pairs)`
        once they are sent."""
        check_priority(priority)
        check_tenant(tenant)
        check_tenant(self.settings.tenant)  # LMQ_TENANT, the default
        deadlines = check_deadlines(expires_s=expires_s, time_limit_s=time_limit_s)
        configs = CheckedConfigs()
        valid = self._checked(jobs) if checked else [coerce_job(job, configs) for job in jobs]
        if job_ids is not None and len(job_ids) != len(valid):
            raise InvalidJobError(f"{len(job_ids)} job ids for {len(valid)} jobs")
        if not checked:
            for job in valid:
                check_limits(job, self.settings)
        if not enqueue_anyway:
            self._check_served({job.model for job in valid})
        update: dict[str, Any] = {"submitted_at": time.time()}
        if batch_id:
            update["batch_id"] = batch_id
        if priority is not None:
            update["priority"] = priority
        update.update(deadlines)
        ids = list(job_ids) if job_ids is not None else [str(uuid.uuid4()) for _ in valid]
        return [(job_id, job.model_copy(update={**update, "tenant": tenant or job.tenant
                                                 or self.settings.tenant}))
                for job_id, job in zip(ids, valid, strict=True)]

    def handles(self, pairs: Sequence[tuple[str, Job]]) -> list[JobHandle]:
        """Handles of sent jobs, each knowing its deadline (no read to learn it)."""
        return [JobHandle(job_id, self, expires_at=job_expiry.expires_at(
                    {"submitted_at": job.submitted_at, "expires_s": job.expires_s}))
                for job_id, job in pairs]

    @staticmethod
    def _checked(jobs: Iterable[Job | dict[str, Any]]) -> list[Job]:
        valid = list(jobs)
        for job in valid:
            if not isinstance(job, ChatJob | CompletionJob | EmbeddingJob):
                raise InvalidJobError(f"checked=True takes jobs made by a validator (ChatJob, "
                                      f"CompletionJob, EmbeddingJob), not {type(job).__name__}")
        return cast(list[Job], valid)

    def _check_served(self, models: set[str]) -> None:
        for model in sorted(models):
            if not self._served.serves(model):
                served = sorted(self._served.get())
                raise ModelNotServedError(
                    f"no live worker serves model {model!r} (queue {queue_name(model)}); "
                    f"served models: {', '.join(served) or 'none'}. Start one with "
                    f"`LMQ_MODEL={model} celery -A workers worker`, or enqueue anyway "
                    "(lmq: --enqueue-anyway; Python: enqueue_anyway=True)")

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher(self.app, self.settings)
        return self._publisher

    # --- reading --------------------------------------------------------------------------

    def handle(self, job_id: str) -> JobHandle:
        return JobHandle(job_id, self)

    def served_models(self, *, refresh: bool = False) -> dict[str, list[str]]:
        """model -> live workers consuming its queue (cached for a few seconds)."""
        return self._served.get(refresh=refresh)

    def job_meta(self, job_id: str) -> dict[str, Any]:
        """The job's stored state; a job past its `expires_s` that no worker started ends
        here as expired (`producers.job_expiry`), so its status never stays PENDING."""
        raw = self.backend_client.get(result_key(self.app, job_id))
        meta = decode_meta(self.app, raw)
        if meta is None or meta.get("status") == states.PENDING:
            deadline = job_expiry.expires_at(self.job_record(job_id))
            if job_expiry.is_past(deadline):
                meta = job_expiry.expire_unstarted(self.app, self.backend_client, job_id,
                                                   deadline or 0.0) or meta
        return meta or {"status": states.PENDING, "result": None}

    def forget(self, job_ids: Sequence[str]) -> None:
        """Delete stored results (e.g. after a batch tool has written them elsewhere)."""
        for start in range(0, len(job_ids), 1000):
            chunk = job_ids[start : start + 1000]
            self.backend_client.delete(*[result_key(self.app, job_id) for job_id in chunk])

    def fetch_results(self, job_ids: Sequence[str]) -> dict[str, tuple[str, Any]]:
        """Non-blocking: id -> (state, payload) for many jobs, one MGET per 1000 ids.

        payload: the result dict (SUCCESS), the error (FAILURE, REVOKED: JobCancelledError
        with .partial), the progress meta dict (PROGRESS), else None.
        """
        found: dict[str, tuple[str, Any]] = {}
        for start in range(0, len(job_ids), 1000):
            chunk = list(job_ids[start : start + 1000])
            raws = self.backend_client.mget([result_key(self.app, job_id) for job_id in chunk])
            found.update(self.decode_results(dict(zip(chunk, raws, strict=True))))
        return found

    def decode_results(self, raws: dict[str, bytes | None]) -> dict[str, tuple[str, Any]]:
        """id -> (state, payload), as `fetch_results`, of stored values read elsewhere
        (the values the result backend publishes as it stores them)."""
        found: dict[str, tuple[str, Any]] = {}
        for job_id, raw in raws.items():
            meta = decode_meta(self.app, raw) or {"status": states.PENDING, "result": None}
            found[job_id] = (meta["status"], payload_of(job_id, meta["status"],
                                                        meta.get("result")))
        return found

    def position(self, job_id: str) -> JobPosition | None:
        """Jobs ahead of a waiting job and its estimated start (`producers.queue_position`);
        None if it is not waiting (running, finished, unknown) or the broker is not Redis."""
        record = self.job_record(job_id)
        broker = self.publisher.broker
        if record is None or broker is None:
            return None
        return queue_position.position(broker, self.store_client, record["model"], job_id,
                                       record.get("priority") or "normal", record.get("tenant"))

    def job_record(self, job_id: str) -> dict[str, Any] | None:
        """What the registry knows of a submitted job (model, kind, batch_id)."""
        return job_registry.lookup(self.store_client, job_id)

    # --- cancelling -----------------------------------------------------------------------

    def cancel(self, job_id: str) -> CancelOutcome:
        return cancellation.cancel_job(self.app, self.store_client, job_id)

    def cancel_model(self, model: str) -> BulkCancel:
        """Revoke every queued and running job of `model`."""
        workers = self.served_models(refresh=True).get(model, [])
        outcome = cancellation.cancel_model(self.app, self.publisher.broker, model, workers)
        # No worker ever sees jobs taken out of the queue: count them here for the metrics.
        count_cancelled_before_start(self.settings.store_url, model, outcome.taken_from_queue)
        return outcome

    def cancel_batch(self, batch_id: str) -> BulkCancel | None:
        return cancellation.cancel_batch(self.app, self.store_client, batch_id)

    # --- asyncio --------------------------------------------------------------------------

    async def achat(self, model: str, prompt_or_messages: Any, **kwargs: Any) -> JobHandle:
        return await asyncio.to_thread(self.chat, model, prompt_or_messages, **kwargs)

    async def acomplete(self, model: str, prompt: str, **kwargs: Any) -> JobHandle:
        return await asyncio.to_thread(self.complete, model, prompt, **kwargs)

    async def aembed(self, model: str, texts: str | Sequence[str], **kwargs: Any) -> JobHandle:
        return await asyncio.to_thread(self.embed, model, texts, **kwargs)

    async def asubmit(self, job: Job | dict[str, Any], **kwargs: Any) -> JobHandle:
        return await asyncio.to_thread(self.submit, job, **kwargs)

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
        self.subscriptions.close()
        self.backend_client.close()
        self.store_client.close()
        self.app.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
