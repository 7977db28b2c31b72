"""Measure Celery's own floor (`ops.celery_floor_app`): the CPU per task of a stock Celery
worker, set up as the pool's, running tasks that only wait as long as a prediction takes."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from celery import Celery

from ops.benchlib import celery_worker
from ops.benchlib.cpu import cpu_s
from ops.celery_floor_app import QUEUE, TASK


@dataclass(frozen=True)
class Floor:
    tasks_per_s: float
    cpu_ms: float  # the floor worker's CPU per task
    hold_ms: float  # how long each task waited


def measure(redis_url: str, slots: int, threads: int, hold_s: float, tasks: int) -> Floor:
    """Run `tasks` tasks through a floor worker with `threads` threads, `slots` at once."""
    client = Celery("lmq-floor-client", broker=redis_url, backend=redis_url)
    client.conf.update(task_serializer="json", result_serializer="json",
                       accept_content=["json"])
    env = {"LMQ_BROKER_URL": redis_url, "LMQ_FLOOR_SLOTS": str(slots)}
    args = ["-P", "threads", "-c", str(threads), "-Q", QUEUE, "--loglevel", "INFO"]
    try:
        with celery_worker.running("ops.celery_floor_app", args, env, client, "floor") as proc:
            client.send_task(TASK, args=(hold_s,), queue=QUEUE).get(timeout=60)  # warm up
            before, started = cpu_s(proc.pid), time.perf_counter()
            handles = [client.send_task(TASK, args=(hold_s,), queue=QUEUE)
                       for _ in range(tasks)]
            for handle in handles:
                handle.get(timeout=600)
            elapsed, cpu = time.perf_counter() - started, cpu_s(proc.pid) - before
    finally:
        client.close()
    return Floor(tasks / elapsed, 1000 * cpu / tasks, 1000 * hold_s)


def default_threads(slots: int) -> int:
    """The pool worker's default thread count for `slots`: LMQ_SLOTS + LMQ_PREFETCH_THREADS."""
    from workers.settings import Settings

    prefetch = Settings.model_fields["prefetch_threads"].default
    return slots + int(os.environ.get("LMQ_PREFETCH_THREADS", prefetch))
