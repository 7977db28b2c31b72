"""Helpers for the worker integration tests (no tests here).

Jobs are sent the way the brief's producers do: a plain Celery app configured from
`workers.celery_config`, `send_task` by name to the model's queue. Never eager mode.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis
from celery import Celery
from celery.result import AsyncResult

from workers.celery_config import STREAMED_HEADER, celery_config
from workers.contract import TASK_FOR_KIND, queue_name
from workers.settings import Settings

LLM = "llama-3.2-1b-instruct"
EMBED = "text-embedding-nomic-embed-text-v1.5"
NOT_LOADED_LLM = "qwen2.5-7b-instruct"


def client_app(redis_url: str, **settings: Any) -> Celery:
    app = Celery("lmq-test-client")
    app.conf.update(celery_config(Settings(broker_url=redis_url, result_backend=redis_url,
                                           **settings)))
    return app


def send(app: Celery, job: Any, *, task_id: str | None = None,
         streamed: bool = False) -> AsyncResult:
    """Send a contract job (or a raw dict with 'kind' and 'model') to its model's queue;
    `streamed`: as a producer that reads its text as it comes."""
    payload = job if isinstance(job, dict) else job.model_dump(mode="json")
    if not isinstance(job, dict) and payload.get("submitted_at") is None:
        payload["submitted_at"] = time.time()
    return app.send_task(TASK_FOR_KIND[payload["kind"]], args=[payload],
                         queue=queue_name(payload["model"]), task_id=task_id or str(uuid.uuid4()),
                         headers={STREAMED_HEADER: True} if streamed else None)


def predict_channels(sim: Any) -> list[dict[str, Any]]:
    return [c for c in sim.admin.channels() if c["endpoint"] == "predict"]


def rpc_calls(sim: Any, endpoint: str) -> list[dict[str, Any]]:
    return [e for e in sim.admin.log(type="rpcCall") if e["msg"].get("endpoint") == endpoint]


def unacked(redis_url: str) -> int:
    """Messages delivered to a worker but not acknowledged yet (kombu's Redis transport)."""
    return int(redis.Redis.from_url(redis_url).hlen("unacked"))


def fragment_entries(redis_url: str, job_id: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    return [fields for _, fields in client.xrange(f"lmq:fragments:{job_id}")]


def state_of(app: Celery, job_id: str) -> str:
    return str(AsyncResult(job_id, app=app).state)


def final(result: AsyncResult, timeout_s: float = 60.0) -> AsyncResult:
    """Wait (with a deadline) until the job reached a ready state."""
    deadline = time.monotonic() + timeout_s
    while not result.ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"job {result.id} not finished after {timeout_s}s "
                                 f"(state {result.state})")
        time.sleep(0.05)
    return result
