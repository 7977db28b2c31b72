"""The naive peer of the pool: a Celery task that opens an LM Studio client per job.

    LMQ_BROKER_URL=redis://... LMQ_LMSTUDIO_HOST=127.0.0.1:1234 \
        celery -A ops.naive_app worker -P prefork -c 4 -Q naive

What a first attempt looks like, and what `ops/bench` compares the pool against: the
prefork pool, no admission, no shared client (each job connects, resolves the model,
predicts and disconnects), settings read from the environment at import. JSON only, so
the comparison is not skewed by a serializer. Not used by anything but the benchmarks.
"""

from __future__ import annotations

import os
import time
from typing import Any

import lmstudio as lms
from celery import Celery

BROKER_URL = os.environ.get("LMQ_BROKER_URL", "redis://127.0.0.1:6379/0")
HOST = os.environ.get("LMQ_LMSTUDIO_HOST", "localhost:1234")
QUEUE = "naive"

app = Celery("lmq-naive", broker=BROKER_URL, backend=BROKER_URL)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                task_default_queue=QUEUE, worker_prefetch_multiplier=1, task_acks_late=True,
                worker_hijack_root_logger=False)


@app.task(name="naive.chat")
def chat(model: str, prompt: str, max_tokens: int, submitted_at: float) -> dict[str, Any]:
    started_at = time.time()
    with lms.Client(HOST) as client:
        result = client.llm.model(model).respond(prompt, config={"maxTokens": max_tokens})
    return {"content": result.content, "tokens": result.stats.predicted_tokens_count,
            "submitted_at": submitted_at, "started_at": started_at, "finished_at": time.time()}
