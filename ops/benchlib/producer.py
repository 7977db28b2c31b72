"""One producer run in its own process, so its peak memory is its own.

    python -m ops.benchlib.producer pool|naive --redis-url URL --jobs N

pool: `JobQueue.submit_many` then `fetch_results` until every job finished.
naive: a `send_task` loop holding one AsyncResult per job, then `.get()` on each.
Prints one JSON line: jobs, elapsed_s, jobs_per_s, finished, peak_kib.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.benchlib.memory import peak_kib  # noqa: E402

CHAT = "llama-3.2-1b-instruct"
MAX_TOKENS = 16


def run_pool(redis_url: str, jobs: int) -> int:
    from producers.job_queue import JobQueue
    from workers.settings import Settings

    queue = JobQueue(Settings(broker_url=redis_url, result_backend=redis_url))
    handles = queue.submit_many([{"model": CHAT, "messages": f"scale question {i}",
                                  "config": {"max_tokens": MAX_TOKENS}} for i in range(jobs)])
    pending = [h.id for h in handles]
    done = 0
    deadline = time.monotonic() + 3600
    while pending and time.monotonic() < deadline:
        states = queue.fetch_results(pending)
        pending = [i for i, (state, _) in states.items()
                   if state not in ("SUCCESS", "FAILURE", "REVOKED")]
        done = jobs - len(pending)
        if pending:
            time.sleep(0.05)  # a benchmark's poll interval, not a test synchronisation
    queue.close()
    return done


def run_naive(redis_url: str, jobs: int) -> int:
    from ops import bench_naive

    app = bench_naive.client_app(redis_url)
    handles = [bench_naive.send(app, CHAT, f"scale question {i}", MAX_TOKENS)
               for i in range(jobs)]
    done = sum(1 for h in handles if h.get(timeout=3600) is not None)
    app.close()
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["pool", "naive"])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    done = (run_pool if args.mode == "pool" else run_naive)(args.redis_url, args.jobs)
    elapsed = time.perf_counter() - started
    print(json.dumps({"jobs": args.jobs, "finished": done, "elapsed_s": elapsed,
                      "jobs_per_s": args.jobs / elapsed, "peak_kib": _self()}))


def _self() -> int:
    import os

    return peak_kib(os.getpid())


if __name__ == "__main__":
    main()
