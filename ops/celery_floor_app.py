"""Celery's own floor under the pool benchmark: a stock Celery worker whose task only waits.

    LMQ_BROKER_URL=redis://... LMQ_FLOOR_SLOTS=4 \
        celery -A ops.celery_floor_app worker -P threads -c 6 -Q floor

Set up as the pool's worker is (`workers.celery_config`): JSON, late acks, task events for
Flower, extended results in Redis, STARTED states, one message prefetched per thread.
`floor.hold(seconds)` holds one of LMQ_FLOOR_SLOTS places for `seconds`, as a prediction
holds a slot, using no CPU, and returns a small result. The worker's CPU per task is then
what Celery itself costs a job on this machine: the part of the pool's CPU per job that no
change to lmstudio-queue's own code can remove (`ops/bench_pool.py` prints it). Not used by
anything but the benchmarks.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from celery import Celery

BROKER_URL = os.environ.get("LMQ_BROKER_URL", "redis://127.0.0.1:6379/0")
QUEUE = "floor"
TASK = "floor.hold"

app = Celery("lmq-floor", broker=BROKER_URL, backend=BROKER_URL)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                result_accept_content=["json"], result_extended=True, task_track_started=True,
                task_acks_late=True, task_reject_on_worker_lost=True,
                worker_prefetch_multiplier=1, worker_send_task_events=True,
                task_send_sent_event=True, task_default_queue=QUEUE,
                worker_hijack_root_logger=False)

_slots = threading.BoundedSemaphore(int(os.environ.get("LMQ_FLOOR_SLOTS", "4")))


@app.task(name=TASK)
def hold(seconds: float) -> dict[str, Any]:
    with _slots:
        time.sleep(seconds)
    return {"kind": "chat", "content": "a reply of sixteen tokens " * 3,
            "stats": {"predicted_tokens_count": 16, "stop_reason": "maxPredictedTokensReached"}}
