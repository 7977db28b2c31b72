"""Floors under the pool benchmark: a stock Celery worker whose task only waits, or only
runs the prediction.

    LMQ_BROKER_URL=redis://... LMQ_FLOOR_SLOTS=4 \
        celery -A ops.celery_floor_app worker -P threads -c 6 -Q floor

Set up as the pool's worker is, with the same settings taken from `workers.celery_config`
(JSON, late acks, task events for Flower, extended results, STARTED states, one message
prefetched per thread), on Celery's stock Redis transport and result backend.
`floor.hold(seconds)` holds one of LMQ_FLOOR_SLOTS places for `seconds`, as a prediction
holds a slot, using no CPU, and returns a small result. The worker's CPU per task is then
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
import time
from typing import Any

import lmstudio as lms
from celery import Celery
from celery.concurrency.base import BasePool, apply_target

from workers import green
from workers.celery_config import celery_config
from workers.lmstudio.loop import SdkLoop
from workers.settings import Settings

BROKER_URL = os.environ.get("LMQ_BROKER_URL", "redis://127.0.0.1:6379/0")
QUEUE = "floor"
TASK = "floor.hold"
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
if os.environ.get("LMQ_FLOOR_POOL") == "greenlets":
    app.conf.worker_pool = "ops.celery_floor_app:GreenletPool"

_slots = threading.BoundedSemaphore(int(os.environ.get("LMQ_FLOOR_SLOTS", "4")))


@app.task(name=TASK)
def hold(seconds: float) -> dict[str, Any]:
    with _slots:
        time.sleep(seconds)
    return {"kind": "chat", "content": "a reply of sixteen tokens " * 3,
            "stats": {"predicted_tokens_count": 16, "stop_reason": "maxPredictedTokensReached"}}


_sdk: tuple[SdkLoop, Any] | None = None
_sdk_lock = threading.Lock()
_loop: SdkLoop | None = None
_loop_lock = threading.Lock()


def _the_loop() -> SdkLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = SdkLoop("floor-sdk-loop")
        return _loop


class GreenletPool(BasePool):
    """Task bodies as greenlets on the SDK loop (`workers.green`)."""

    body_can_be_buffer = True
    signal_safe = False

    def on_start(self) -> None:
        self.runner = green.GreenletRunner(_the_loop().loop, self.limit)

    def on_apply(self, target: Any, args: Any = None, kwargs: Any = None,
                 callback: Any = None, accept_callback: Any = None, **_: Any) -> None:
        self.runner.spawn(apply_target, target, args, kwargs, callback, accept_callback)


def _model(host: str, model_key: str) -> tuple[SdkLoop, Any]:
    """The process's one loop and the model's handle on its one AsyncClient."""
    global _sdk
    if green.in_job_greenlet():
        if _sdk is None:
            handle = green.await_(_open(host, model_key))
            if _sdk is None:
                _sdk = _the_loop(), handle
        return _sdk
    with _sdk_lock:
        if _sdk is None:
            loop = _the_loop()
            _sdk = loop, loop.run(_open(host, model_key))
        return _sdk


async def _open(host: str, model_key: str) -> Any:
    client = lms.AsyncClient(host)
    await client.__aenter__()  # closed with the process
    return await client.llm.model(model_key)


async def _respond(model: Any, text: str, max_tokens: int) -> dict[str, Any]:
    stream = await model.respond_stream(text, config={"maxTokens": max_tokens})
    async for _fragment in stream:
        pass
    result = stream.result()
    return {"kind": "chat", "content": result.content, "stats": result.stats.to_dict()}


_async_slots: asyncio.Semaphore | None = None


async def _respond_limited(model: Any, text: str, max_tokens: int) -> dict[str, Any]:
    global _async_slots
    if _async_slots is None:
        _async_slots = asyncio.Semaphore(int(os.environ.get("LMQ_FLOOR_SLOTS", "4")))
    async with _async_slots:
        return await _respond(model, text, max_tokens)


@app.task(name=PREDICT_TASK)
def predict(host: str, model_key: str, text: str, max_tokens: int) -> dict[str, Any]:
    loop, model = _model(host, model_key)
    if green.in_job_greenlet():
        return green.await_(_respond_limited(model, text, max_tokens))
    with _slots:
        return loop.submit(_respond(model, text, max_tokens)).result()
