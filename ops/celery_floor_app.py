"""Floors under the pool benchmark: a stock Celery worker whose task only waits, or only
runs the prediction.

    LMQ_BROKER_URL=redis://... LMQ_FLOOR_SLOTS=4 \
        celery -A ops.celery_floor_app worker -c 6 -Q floor

Set up as the pool's worker is, with the same settings taken from `workers.celery_config`
(JSON, late acks, task events for Flower, extended results, STARTED states, one message
prefetched per job) and the worker's pool (`workers.delivery.pool`: each task a greenlet
on the process's one SDK event loop; LMQ_FLOOR_POOL=threads: Celery's threads pool, each
task a thread that hops to the loop), on Celery's stock Redis transport and result backend.
`floor.hold(seconds)` holds one of LMQ_FLOOR_SLOTS places for `seconds` on the loop, as a
prediction holds a slot, using no CPU, and returns a small result. The worker's CPU per task is then
what Celery itself costs a job on this machine: the part of the pool's CPU per job that no
change to lmstudio-queue's own code can remove (`ops/bench_pool.py` prints it).
`floor.predict(host, model, text, max_tokens)` runs the prediction as the pool's worker
does, and nothing else: the SDK's `AsyncClient`, one per process on its own event loop
(`workers.lmstudio.loop.SdkLoop`), the stream consumed there, at most LMQ_FLOOR_SLOTS at
once. Its CPU per job and throughput are then the best a Celery worker that runs the SDK
this way can do, before any of lmstudio-queue's own per-job work (admission, start and
result scripts, progress, cancel watch, validation). Not used by anything but the
benchmarks.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

import lmstudio as lms
from celery import Celery, bootsteps

from workers.celery_config import celery_config
from workers.lmstudio.loop import SdkLoop
from workers.settings import Settings

BROKER_URL = os.environ.get("LMQ_BROKER_URL", "redis://127.0.0.1:6379/0")
QUEUE = "floor"
TASK = "floor.hold"
T = TypeVar("T")
PREDICT_TASK = "floor.predict"

# The pool worker's own settings for what a task costs Celery (not its transport, backend
# or queues: those are the floor's stock ones).
SHARED = ("task_serializer", "result_serializer", "accept_content", "result_accept_content",
          "result_extended", "task_track_started", "task_acks_late",
          "task_reject_on_worker_lost", "worker_prefetch_multiplier",
          "worker_send_task_events", "task_send_sent_event", "worker_hijack_root_logger")

app = Celery("lmq-floor", broker=BROKER_URL, backend=BROKER_URL)
_pool = celery_config(Settings(broker_url=BROKER_URL, result_backend=BROKER_URL))
app.conf.update({name: _pool[name] for name in SHARED}, task_default_queue=QUEUE)
if os.environ.get("LMQ_FLOOR_POOL", "greenlets") == "greenlets":
    app.conf.worker_pool = "workers.delivery.pool:TaskPool"  # the worker's: jobs on the loop

_loop: SdkLoop | None = None
_loop_lock = threading.Lock()
_slots: asyncio.Semaphore | None = None  # (loop only)
_model: Any = None  # the model's handle on the process's one AsyncClient (loop only)


def _the_loop() -> SdkLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = SdkLoop("floor-sdk-loop")
        return _loop


class AttachLoop(bootsteps.StartStopStep):
    """Give the worker's pool its loop, as the LM Studio step does in the pool's worker."""

    requires = ("celery.worker.components:Pool",)

    def start(self, parent: Any) -> None:
        attach = getattr(parent.pool, "attach", None)
        if attach is not None:
            attach(_the_loop().loop)


app.steps["worker"].add(AttachLoop)


async def _in_slot(work: Awaitable[T]) -> T:
    global _slots
    if _slots is None:
        _slots = asyncio.Semaphore(int(os.environ.get("LMQ_FLOOR_SLOTS", "4")))
    async with _slots:
        return await work


@app.task(name=TASK)
def hold(seconds: float) -> dict[str, Any]:
    _the_loop().run(_in_slot(asyncio.sleep(seconds)))
    return {"kind": "chat", "content": "a reply of sixteen tokens " * 3,
            "stats": {"predicted_tokens_count": 16, "stop_reason": "maxPredictedTokensReached"}}


async def _respond(host: str, model_key: str, text: str, max_tokens: int) -> dict[str, Any]:
    global _model
    if _model is None:
        client = lms.AsyncClient(host)
        await client.__aenter__()  # closed with the process
        _model = await client.llm.model(model_key)
    stream = await _model.respond_stream(text, config={"maxTokens": max_tokens})
    async for _fragment in stream:
        pass
    result = stream.result()
    return {"kind": "chat", "content": result.content, "stats": result.stats.to_dict()}


@app.task(name=PREDICT_TASK)
def predict(host: str, model_key: str, text: str, max_tokens: int) -> dict[str, Any]:
    return _the_loop().run(_in_slot(_respond(host, model_key, text, max_tokens)))
