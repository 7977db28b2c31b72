"""Publish jobs to their model queues: one Redis pipeline for many jobs.

On a Redis broker the task messages are built with Celery's own protocol-2 helper and pushed
in one pipeline together with the job-registry entries (and batch membership), so a bulk
submission costs one round trip per chunk instead of one per job. Other brokers fall back to
`send_task` per job. The message is what kombu's Redis transport writes for a publish to the
default exchange with the queue as routing key; workers consume it unchanged.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import redis
from celery import Celery

from producers import job_registry
from producers.sent_events import SentEvents, SentJob
from workers import keys
from workers.celery_config import (
    ENQUEUED_AT_HEADER,
    REDIS_PRIORITY_STEP,
    STREAMED_HEADER,
    TENANT_HEADER,
    message_priority,
    model_priority_list,
    tenant_list,
)
from workers.contract import TASK_FOR_KIND, Job, queue_name
from workers.settings import Settings
from workers.task_display import argsrepr as job_argsrepr

T = TypeVar("T")

CHUNK_JOBS = 500  # jobs per pipeline round trip, at most
FIRST_CHUNK_JOBS = 8  # the first round trip's: workers start on them while the rest are built


def chunks(jobs: Sequence[T]) -> Iterator[Sequence[T]]:
    """`jobs` in round trips of 8, 16, 32, ... up to CHUNK_JOBS jobs. One chunk of 400 jobs
    took ~55 ms to build and send here, and no worker could start before all of it was
    sent; a first chunk of 8 is in the queue ~1 ms after the jobs were checked, and the
    doubling keeps the round trips few (7 for 1,000 jobs)."""
    start, size = 0, FIRST_CHUNK_JOBS
    while start < len(jobs):
        yield jobs[start : start + size]
        start, size = start + size, min(2 * size, CHUNK_JOBS)


def broker_list(job: Job) -> str:
    """The Redis list of the job's queue, priority and tenant (`tenant_list`)."""
    return tenant_list(_priority_list(job), job.tenant)


def _priority_list(job: Job) -> str:
    return model_priority_list(job.model, job.priority)


def push(pipe: Any, job: Job, message: str) -> None:
    """Queue a job's message on its tenant's list, then put the tenant in the list's turns
    (after the push: a take that finds the tenant's list empty drops it from the turns, so
    registering first could strand the job). New tenants join with score 0: next turn."""
    pipe.lpush(broker_list(job), message)
    if job.tenant:
        pipe.zadd(keys.tenant_turns(_priority_list(job)), {job.tenant: 0}, nx=True)


def ring(pipe: Any, queues: Sequence[str]) -> None:
    """Wake idle workers of these queues (a token per job, at most keys.BELL_TOKENS_MAX kept):
    they block on the bell, not on a job list (a job may be on any tenant's list)."""
    for queue, jobs in sorted(Counter(queues).items()):
        pipe.lpush(keys.bell(queue), *["1"] * min(jobs, keys.BELL_TOKENS_MAX))
        pipe.ltrim(keys.bell(queue), 0, keys.BELL_TOKENS_MAX - 1)


def task_message(app: Celery, job_id: str, job: Job, payload: dict[str, Any] | None = None,
                 shown: str | None = None, streamed: bool = False) -> str:
    """The JSON string kombu's Redis transport would LPUSH for this task. `payload` (the
    job's JSON dict) and `shown` (its argsrepr) when the caller has made them already."""
    payload = job.model_dump(mode="json") if payload is None else payload
    # Flower shows argsrepr: shortened, with secrets masked (never the raw prompt).
    shown = job_argsrepr(payload) if shown is None else shown
    msg = app.amqp.as_task_v2(job_id, TASK_FOR_KIND[job.kind], args=(payload,), kwargs={},
                              argsrepr=f"({shown},)", kwargsrepr="{}")
    msg.headers[ENQUEUED_AT_HEADER] = job.submitted_at
    msg.headers[TENANT_HEADER] = job.tenant
    if streamed:
        msg.headers[STREAMED_HEADER] = True
    body = json.dumps(msg.body).encode()
    queue = queue_name(job.model)
    return json.dumps({
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": msg.headers,
        "properties": {
            **msg.properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": REDIS_PRIORITY_STEP[job.priority],
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    })


def chunk_pipelines(store: Any, broker: Any, same_server: bool) -> tuple[Any, Any]:
    """The pipelines a chunk is queued on (`queue_chunk`), from the store's and the broker's
    clients (redis-py's or its asyncio twin's): one transaction when they are one Redis;
    else the store's plain and the broker's a transaction (see `queue_chunk`)."""
    store_pipe = store.pipeline(transaction=same_server)
    return store_pipe, store_pipe if same_server else broker.pipeline(transaction=True)


def queue_chunk(app: Celery, store_pipe: Any, broker_pipe: Any,
                jobs: Sequence[tuple[str, Job]], ttl_s: int,
                streamed: bool = False) -> list[SentJob]:
    """Queue a chunk's commands on a Redis broker's pipelines (redis-py's or its asyncio
    twin's: the same command API): the registry entries on `store_pipe`, the messages and
    the bells on `broker_pipe` (the same pipeline when the store is the broker). The caller
    executes them, the store's first; returns the chunk's `task-sent` events.

    The broker's pipeline is a transaction: a producer that dies mid-send never leaves a
    job pushed without its tenant in the turns (`push`). Same round trip as a plain one."""
    record(store_pipe, jobs, ttl_s)
    events: list[SentJob] = []
    for job_id, job in jobs:
        payload = job.model_dump(mode="json")  # made once for the message and the event
        shown = job_argsrepr(payload)
        push(broker_pipe, job, task_message(app, job_id, job, payload, shown, streamed))
        events.append((job_id, TASK_FOR_KIND[job.kind], shown, queue_name(job.model)))
    ring(broker_pipe, [queue_name(job.model) for _, job in jobs])
    return events


def record(pipe: Any, jobs: Sequence[tuple[str, Job]], ttl_s: int) -> None:
    """The jobs' registry entries and batch membership."""
    batches: dict[str, list[str]] = {}
    for job_id, job in jobs:
        job_registry.add_to_pipeline(pipe, job_id, job, ttl_s)
        if job.batch_id:
            batches.setdefault(job.batch_id, []).append(job_id)
    for batch_id, ids in batches.items():
        pipe.rpush(keys.batch_jobs(batch_id), *ids)
        pipe.expire(keys.batch_jobs(batch_id), ttl_s)


class Publisher:
    """Pushes (job_id, job) pairs to the broker and records them in the job registry."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.raw = settings.broker_url.startswith(("redis://", "rediss://"))
        self.broker = redis.Redis.from_url(settings.broker_url) if self.raw else None
        self.store = redis.Redis.from_url(settings.store_url)
        self.same_server = self.raw and settings.broker_url == settings.store_url
        self.sent_events = SentEvents(app)

    def publish(self, jobs: Sequence[tuple[str, Job]], *, streamed: bool = False) -> None:
        """`streamed`: their producer reads their text as it is generated
        (`STREAMED_HEADER`)."""
        for chunk in chunks(jobs):
            self._publish_chunk(chunk, streamed)

    def _publish_chunk(self, jobs: Sequence[tuple[str, Job]], streamed: bool) -> None:
        if not self.raw:
            store_pipe = self.store.pipeline(transaction=False)
            record(store_pipe, jobs, self.settings.result_expires_s)
            store_pipe.execute()
            for job_id, job in jobs:
                payload = job.model_dump(mode="json")
                self.app.send_task(TASK_FOR_KIND[job.kind], args=(payload,), task_id=job_id,
                                   queue=queue_name(job.model),
                                   priority=message_priority(job.priority,
                                                             self.settings.broker_url),
                                   headers={ENQUEUED_AT_HEADER: job.submitted_at,
                                            TENANT_HEADER: job.tenant,
                                            **({STREAMED_HEADER: True} if streamed else {})},
                                   argsrepr=f"({job_argsrepr(payload)},)", kwargsrepr="{}")
            return
        store_pipe, broker_pipe = chunk_pipelines(self.store, self.broker, self.same_server)
        events = queue_chunk(self.app, store_pipe, broker_pipe, jobs,
                             self.settings.result_expires_s, streamed)
        if broker_pipe is not store_pipe:
            store_pipe.execute()  # registry first: a fast worker never sees an unknown job
        broker_pipe.execute()
        # send_task would have emitted these (one message per chunk: `sent_events`); Flower
        # shows queued jobs from them.
        self.sent_events.send(events)

    def close(self) -> None:
        self.sent_events.close()
        self.store.close()
        if self.broker is not None:
            self.broker.close()
