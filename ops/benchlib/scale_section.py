"""How the pool scales from 100 to 10,000 jobs, vs the naive app, with memory.

For each size: a fresh pool worker (or naive prefork worker) and a producer in its own
process (`ops.benchlib.producer`): jobs/s end to end, producer peak RSS, worker peak RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from ops import bench_naive
from ops.benchlib.figure import Figure
from ops.benchlib.memory import peak_kib, tree_peak_kib
from ops.benchlib.stack import CHAT, ROOT, stack
from producers.local_pool import local_pool


def produce(mode: str, redis_url: str, jobs: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "ops.benchlib.producer", mode,
                           "--redis-url", redis_url, "--jobs", str(jobs)],
                          cwd=ROOT, capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} producer failed: {proc.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if figures["finished"] != jobs:
        raise RuntimeError(f"{mode} producer: only {figures['finished']}/{jobs} finished")
    return figures


def one_size(parts: Any, jobs: int, concurrency: int) -> tuple[dict, dict]:  # type: ignore[type-arg]
    env = {"LMQ_CONCURRENCY": str(concurrency), "LMQ_SLOTS": str(concurrency)}
    parts.flush()
    with local_pool(parts.redis_url, parts.host, [CHAT], extra_env=env) as pool:
        pool.queue.chat(CHAT, "warm up").result(timeout=120)
        pooled = produce("pool", parts.redis_url, jobs)
        pooled["worker_kib"] = peak_kib(pool.workers[0].process.pid)  # type: ignore[union-attr]
    parts.flush()
    with bench_naive.naive_worker(parts.redis_url, parts.host, concurrency) as proc:
        naive = produce("naive", parts.redis_url, jobs)
        naive["worker_kib"] = tree_peak_kib(proc.pid)
    return pooled, naive


def measure(sizes: list[int], concurrency: int, say: Any) -> list[Figure]:
    figures = []
    with stack({"parallel_slots": concurrency}) as parts:
        for jobs in sizes:
            say(f"scale: {jobs} jobs through the pool and through the naive app")
            pooled, naive = one_size(parts, jobs, concurrency)
            section = f"scale {jobs:,} jobs"
            peer = "naive Celery"
            figures += [
                Figure(section, "end-to-end throughput", "jobs/s", pooled["jobs_per_s"],
                       naive["jobs_per_s"], peer),
                Figure(section, "producer peak RSS", "MiB", pooled["peak_kib"] / 1024,
                       naive["peak_kib"] / 1024, "naive producer (AsyncResult per job)",
                       higher_is_better=False),
                Figure(section, "worker peak RSS", "MiB", pooled["worker_kib"] / 1024,
                       naive["worker_kib"] / 1024, "naive prefork worker (all processes)",
                       higher_is_better=False),
            ]
    return figures
