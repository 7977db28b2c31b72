#!/usr/bin/env python
"""Benchmark: the pool's throughput with Flower attached vs without, and Flower's memory.

Runs in one process tree, on a private redis-server and a simulator subprocess with instant
predictions (so the pool, not the model, is what is measured):

1. peer: N completion jobs through the worker pool without Flower;
2. the same N jobs with `celery -A workers flower` attached (LMQ_FLOWER_MAX_TASKS=--max-tasks),
   sampling Flower's resident memory (VmRSS, VmHWM from /proc) at each quarter of the run.

Prints jobs/s of both phases and their ratio, and Flower's memory per quarter: with N above
max_tasks its memory should level off once it holds max_tasks tasks (it forgets the oldest).

    .venv/bin/python ops/bench_flower.py --jobs 20000 --max-tasks 10000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from producers.flower_process import FlowerProcess  # noqa: E402
from producers.redis_server import RedisServer  # noqa: E402
from producers.worker_process import WorkerProcess  # noqa: E402
from simulator.testing import running_simulator  # noqa: E402
from workers.metrics import read_model_metrics  # noqa: E402

MODEL = "llama-3.2-1b-instruct"
CHUNK = 2000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per phase")
    parser.add_argument("--max-tasks", type=int, default=10_000, help="LMQ_FLOWER_MAX_TASKS")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker")
    parser.add_argument("--timeout-s", type=float, default=3600)
    return parser.parse_args(argv)


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def finished(redis_url: str) -> int:
    snap = read_model_metrics(redis_url).get(MODEL, {})
    return sum(int(snap.get(k, 0)) for k in ("succeeded", "failed", "cancelled"))


def run_phase(env: dict[str, str], jobs: int, flower: FlowerProcess | None,
              timeout_s: float) -> dict[str, object]:
    from producers import JobQueue
    from workers.settings import Settings

    url = env["LMQ_BROKER_URL"]
    start_count = finished(url)
    queue = JobQueue(Settings(broker_url=url, result_backend=url))
    job = {"kind": "completion", "model": MODEL, "prompt": "Say hi", "config": {"max_tokens": 2}}
    samples: list[tuple[int, dict[str, int]]] = []
    marks = [jobs * q // 4 for q in (1, 2, 3, 4)]
    began = time.perf_counter()
    for first in range(0, jobs, CHUNK):
        queue.submit_many([job] * min(CHUNK, jobs - first))
    deadline = time.monotonic() + timeout_s
    while (done := finished(url) - start_count) < jobs:
        if flower is not None and marks and done >= marks[0]:
            samples.append((marks.pop(0), memory_kib(flower.process.pid)))  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {jobs} jobs finished")
        time.sleep(0.05)  # a benchmark poll, not a test synchronisation
    elapsed = time.perf_counter() - began
    if flower is not None:
        time.sleep(2)  # let Flower drain the last events before the final sample
        samples.append((jobs, memory_kib(flower.process.pid)))  # type: ignore[union-attr]
    queue.close()
    return {"elapsed_s": elapsed, "jobs_per_s": jobs / elapsed, "memory": samples}


def main() -> None:
    args = parse_args()
    report(args, *measure(args))


def measure(args: argparse.Namespace) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """(without Flower, with Flower) phase results; `args` as from `parse_args`. ops/bench
    calls this too."""
    server = RedisServer().start()
    sim_config = {"timing": {"prefill_tokens_per_s": 0, "decode_tokens_per_s": 0,
                             "parallel_slots": 64, "reply_min_tokens": 2,
                             "reply_max_tokens": 2}}
    try:
        with running_simulator(sim_config, in_process=False) as sim:
            env = {"LMQ_BROKER_URL": server.url, "LMQ_RESULT_BACKEND": server.url,
                   "LMQ_LMSTUDIO_HOST": sim.host, "LMQ_GPU_MEMORY": "24GiB",
                   "LMQ_SLOTS": str(args.concurrency), "LMQ_CONCURRENCY": str(args.concurrency),
                   "LMQ_FLOWER_BASIC_AUTH": "bench:bench",
                   "LMQ_FLOWER_MAX_TASKS": str(args.max_tasks), "PYTHONUNBUFFERED": "1"}
            return run_both(args, env)
    finally:
        server.stop()


def run_both(args: argparse.Namespace, env: dict[str, str]) -> tuple[dict, dict]:
    workers = [WorkerProcess(MODEL, env).start() for _ in range(args.workers)]
    flower: FlowerProcess | None = None
    try:
        wait_ready(env["LMQ_BROKER_URL"], workers)
        run_phase(env, min(200, args.jobs), None, args.timeout_s)  # warm-up, not reported
        without = run_phase(env, args.jobs, None, args.timeout_s)
        flower = FlowerProcess(env).start()
        with_flower = run_phase(env, args.jobs, flower, args.timeout_s)
        return without, with_flower
    finally:
        if flower is not None:
            flower.stop()
        for worker in workers:
            worker.stop()


def wait_ready(broker_url: str, workers: list[WorkerProcess], timeout_s: float = 60) -> None:
    from celery import Celery

    app = Celery(broker=broker_url)
    deadline = time.monotonic() + timeout_s
    names = {w.hostname for w in workers}
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5)
        if names <= {host for reply in replies for host in reply}:
            return
        for worker in workers:
            if not worker.is_running():
                raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
    raise TimeoutError("workers not ready")


def report(args: argparse.Namespace, without: dict, with_flower: dict) -> None:
    print(f"jobs per phase: {args.jobs}  workers: {args.workers} x {args.concurrency} threads  "
          f"flower max_tasks: {args.max_tasks}  cores: {os.cpu_count()}")
    print(f"without Flower: {without['elapsed_s']:.1f} s  {without['jobs_per_s']:.1f} jobs/s")
    print(f"with Flower:    {with_flower['elapsed_s']:.1f} s  "
          f"{with_flower['jobs_per_s']:.1f} jobs/s")
    print(f"throughput ratio with/without Flower: "
          f"{with_flower['jobs_per_s'] / without['jobs_per_s']:.3f}")
    for done, mem in with_flower["memory"]:
        print(f"  Flower after {done:>7} jobs: RSS {mem['VmRSS'] / 1024:.1f} MiB, "
              f"peak {mem['VmHWM'] / 1024:.1f} MiB")


if __name__ == "__main__":
    from ops.benchlib.entry import run

    raise SystemExit(run(main))
