"""A tiny registry of submitted job ids: `lmq:job:<id>` -> {"model", "kind", "batch_id"},
and the prediction config as sent (`lmq result` shows it; results do not carry it).

It lets `lmq cancel ID` tell an unknown id from a queued one (Celery reports both as
PENDING), and knows which queue a job went to. Entries expire with the results.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from workers import keys
from workers.contract import Job

job_key = keys.job  # the registry entry of one submitted job: `lmq:job:<id>`


def record(job: Job) -> str:
    entry = {"model": job.model, "kind": job.kind, "batch_id": job.batch_id,
             "submitted_at": job.submitted_at, "priority": job.priority, "tenant": job.tenant}
    if job.expires_s is not None:  # a waiter ends the job if no worker started it in time
        entry["expires_s"] = job.expires_s
    config = getattr(job, "config", None)
    if config is not None and (sent := config.model_dump(mode="json", exclude_none=True)):
        entry["config"] = sent
    return json.dumps(entry)


def add_to_pipeline(pipe: Any, job_id: str, job: Job, ttl_s: int) -> None:
    pipe.set(job_key(job_id), record(job), ex=ttl_s)


def lookup(client: redis.Redis, job_id: str) -> dict[str, Any] | None:
    raw = client.get(job_key(job_id))
    return json.loads(raw) if raw else None
