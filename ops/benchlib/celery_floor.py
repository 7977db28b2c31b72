"""Measure the floors of `ops.celery_floor_app`: the CPU per task of a stock Celery worker,
set up as the pool's, running tasks that only wait as long as a prediction takes
(`measure`), or that only run the prediction with the SDK as the pool's worker does
(`FloorWorker.predict`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from celery import Celery

from ops.benchlib import celery_worker
from ops.benchlib.cpu import cpu_s
from ops.celery_floor_app import PREDICT_TASK, QUEUE, TASK


@dataclass(frozen=True)
class Floor:
    tasks_per_s: float
    cpu_ms: float  # the floor worker's CPU per task
    hold_ms: float  # how long each task waited


def measure(redis_url: str, slots: int, threads: int, hold_s: float, tasks: int) -> Floor:
    """Run `tasks` tasks through a floor worker with `threads` threads, `slots` at once."""
    with floor_worker(redis_url, slots, threads) as worker:
        floor = worker.run(TASK, [(hold_s,)] * tasks)
    return Floor(floor.tasks_per_s, floor.cpu_ms, 1000 * hold_s)


@dataclass(frozen=True)
class FloorWorker:
    client: Celery
    pid: int

    def run(self, task: str, arguments: list[tuple[object, ...]]) -> Floor:
        """One task per argument tuple, all sent at once (after one to warm up)."""
        self.client.send_task(task, args=arguments[0], queue=QUEUE).get(timeout=60)
        before, started = cpu_s(self.pid), time.perf_counter()
        handles = [self.client.send_task(task, args=one, queue=QUEUE) for one in arguments]
        for handle in handles:
            handle.get(timeout=600)
        elapsed, cpu = time.perf_counter() - started, cpu_s(self.pid) - before
        return Floor(len(arguments) / elapsed, 1000 * cpu / len(arguments), 0.0)

    def predict(self, host: str, model_key: str, texts: list[str], max_tokens: int) -> Floor:
        """A chat prediction per text (`floor.predict`)."""
        return self.run(PREDICT_TASK, [(host, model_key, text, max_tokens) for text in texts])


@contextmanager
def floor_worker(redis_url: str, slots: int, threads: int,
                 pool: str = "greenlets") -> Iterator[FloorWorker]:
    """A floor worker running `threads` tasks at once, `slots` of them holding or predicting;
    `pool`: "greenlets" (the pool worker's pool) or "threads" (Celery's)."""
    client = Celery("lmq-floor-client", broker=redis_url, backend=redis_url)
    client.conf.update(task_serializer="json", result_serializer="json",
                       accept_content=["json"])
    env = {"LMQ_BROKER_URL": redis_url, "LMQ_FLOOR_SLOTS": str(slots), "LMQ_FLOOR_POOL": pool}
    chosen = ["-P", "threads"] if pool == "threads" else []
    args = [*chosen, "-c", str(threads), "-Q", QUEUE, "--loglevel", "INFO"]
    try:
        with celery_worker.running("ops.celery_floor_app", args, env, client, "floor") as proc:
            yield FloorWorker(client, proc.pid)
    finally:
        client.close()


def default_threads(slots: int) -> int:
    """The pool worker's default thread count for `slots`: LMQ_SLOTS + LMQ_PREFETCH_THREADS."""
    from workers.settings import Settings

    prefetch = Settings.model_fields["prefetch_threads"].default
    return slots + int(os.environ.get("LMQ_PREFETCH_THREADS", prefetch))
