#!/usr/bin/env python
"""The naive peer, measured: `ops.naive_app` (a client per job, prefork, no admission).

    .venv/bin/python ops/bench_naive.py --redis-url URL --host HOST [--jobs 200] [-c 4]

Starts `celery -A ops.naive_app worker -P prefork -c C -Q naive` against an existing Redis
and LM Studio (or simulator) and prints one JSON line: jobs/s, queue overhead (enqueue to
start) and the worker's peak memory. `ops/bench` imports the functions below and runs the
pool on the same Redis and simulator in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from celery import Celery  # noqa: E402

from ops.benchlib import celery_worker  # noqa: E402
from ops.benchlib.memory import tree_peak_kib  # noqa: E402

TASK = "naive.chat"
QUEUE = "naive"


def client_app(redis_url: str) -> Celery:
    app = Celery("lmq-naive-client", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    return app


@contextmanager
def naive_worker(redis_url: str, host: str, concurrency: int) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A ops.naive_app worker -P prefork`, ready when it answers a ping."""
    app = client_app(redis_url)
    try:
        with celery_worker.running(
                "ops.naive_app",
                ["-P", "prefork", "-c", str(concurrency), "-Q", QUEUE, "--loglevel", "WARNING"],
                {"LMQ_BROKER_URL": redis_url, "LMQ_LMSTUDIO_HOST": host}, app, "naive") as proc:
            yield proc
    finally:
        app.close()


def send(app: Celery, model: str, prompt: str, max_tokens: int) -> Any:
    return app.send_task(TASK, args=(model, prompt, max_tokens, time.time()), queue=QUEUE)


def throughput(app: Celery, model: str, texts: list[str], max_tokens: int) -> dict[str, float]:
    """Jobs/s and tokens/s of `texts` sent in a send_task loop and collected with .get()."""
    send(app, model, "warm up", max_tokens).get(timeout=120)
    started = time.perf_counter()
    handles = [send(app, model, text, max_tokens) for text in texts]
    results = [handle.get(timeout=1800) for handle in handles]
    elapsed = time.perf_counter() - started
    tokens = sum(r["tokens"] for r in results)
    return {"jobs_per_s": len(texts) / elapsed, "tokens_per_s": tokens / elapsed,
            "elapsed_s": elapsed}


def overhead_ms(app: Celery, model: str, n: int) -> float:
    """Median enqueue-to-start of jobs sent one at a time."""
    waits = []
    for i in range(n):
        result = send(app, model, f"overhead {i}", 4).get(timeout=120)
        waits.append(1000 * (result["started_at"] - result["submitted_at"]))
    return statistics.median(waits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--host", required=True, help="LM Studio / simulator host:port")
    parser.add_argument("--model", default="llama-3.2-1b-instruct")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    texts = [f"Short question number {i}?" for i in range(args.jobs)]
    with naive_worker(args.redis_url, args.host, args.concurrency) as proc:
        app = client_app(args.redis_url)
        figures = throughput(app, args.model, texts, args.max_tokens)
        figures["overhead_ms"] = overhead_ms(app, args.model, 20)
        figures["worker_peak_kib"] = tree_peak_kib(proc.pid)
        app.close()
    print(json.dumps(figures))


if __name__ == "__main__":
    from ops.benchlib.entry import run

    raise SystemExit(run(main))
