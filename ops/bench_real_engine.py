#!/usr/bin/env python
"""Real-engine benchmark: real SmolLM2-135M tokens through the pool vs direct, same run.

    .venv/bin/python ops/bench_real_engine.py [--jobs 12] [--max-tokens 32]
                                              [--concurrency 2] [--threads 1] [--rounds 2]

Starts a private redis-server and `python -m simulator --engine real` (llama.cpp on the
CPU, `--threads` threads, `--concurrency` slots), one `celery -A workers worker` for the
model, and measures generated tokens per second (sum of predicted tokens / wall time) of
the same kind of chat jobs:

* direct: `respond()` from `--concurrency` threads sharing one lmstudio SDK client;
* pool:   the jobs through Redis and the worker (`JobQueue.submit_many`, results awaited).

Rounds alternate direct / pool so a change in machine load hits both; each round uses fresh
prompts (no prompt-cache advantage). Goal: pool / direct >= 0.9 tokens per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from producers.job_queue import JobQueue  # noqa: E402
from producers.local_pool import local_pool  # noqa: E402
from producers.redis_server import RedisServer  # noqa: E402
from simulator.real_models import LLM_KEY, missing_reason  # noqa: E402
from simulator.testing import running_simulator  # noqa: E402

GOAL_RATIO = 0.9


def prompts(tag: str, n: int) -> list[str]:
    return [f"In two sentences, describe item {tag}-{i} of a shopping list." for i in range(n)]


def direct_tokens_per_s(host: str, texts: list[str], concurrency: int,
                        max_tokens: int) -> float:
    import lmstudio as lms

    with lms.Client(host) as client:
        model = client.llm.model(LLM_KEY)
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(
                lambda text: model.respond(text, config={"maxTokens": max_tokens}), texts))
        elapsed_s = time.perf_counter() - started
    return sum(r.stats.predicted_tokens_count for r in results) / elapsed_s


def pool_tokens_per_s(queue: JobQueue, texts: list[str], max_tokens: int) -> float:
    started = time.perf_counter()
    handles = queue.submit_many([{"model": LLM_KEY, "messages": text,
                                  "config": {"max_tokens": max_tokens}} for text in texts])
    results = [handle.result(timeout=600) for handle in handles]
    elapsed_s = time.perf_counter() - started
    return sum(r.stats.predicted_tokens_count for r in results) / elapsed_s


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12, help="Jobs per round and side.")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=2,
                        help="Simulator slots = direct threads (the worker derives its own "
                             "concurrency from the slots).")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads.")
    parser.add_argument("--rounds", type=int, default=2)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    reason = missing_reason()
    if reason:
        sys.exit(f"bench_real_engine: {reason}")
    report(args, measure(args))


def say_now(line: str) -> None:
    print(line, flush=True)


def measure(args: argparse.Namespace, say: Callable[[str], None] = say_now
            ) -> dict[str, list[float]]:
    """Tokens/s per round, {"direct": [...], "pool": [...]}; `args` as from `parse_args`.
    Needs the local models (`missing_reason()` is None). ops/bench calls this too."""
    config = {"engine": "real", "real": {"threads": args.threads},
              "timing": {"parallel_slots": args.concurrency}}
    redis = RedisServer().start()
    try:
        with running_simulator(config, in_process=False) as sim, \
                local_pool(redis.url, sim.host, [LLM_KEY],
                           extra_env={"LMQ_SLOTS": str(args.concurrency)}) as pool:
            return run(sim.host, pool.queue, args, say)
    finally:
        redis.stop()


def run(host: str, queue: JobQueue, args: argparse.Namespace, say: Callable[[str], None]
        ) -> dict[str, list[float]]:
    # Warm up both paths (model pages, connections) outside the measurement.
    direct_tokens_per_s(host, prompts("warm-d", args.concurrency), args.concurrency, 8)
    pool_tokens_per_s(queue, prompts("warm-p", args.concurrency), 8)
    direct, pooled = [], []
    for round_no in range(args.rounds):
        direct.append(direct_tokens_per_s(host, prompts(f"d{round_no}", args.jobs),
                                          args.concurrency, args.max_tokens))
        pooled.append(pool_tokens_per_s(queue, prompts(f"p{round_no}", args.jobs),
                                        args.max_tokens))
        say(f"round {round_no + 1}: direct {direct[-1]:.1f} tok/s, pool {pooled[-1]:.1f} tok/s")
    return {"direct": direct, "pool": pooled}


def report(args: argparse.Namespace, rounds: dict[str, list[float]]) -> None:
    direct, pooled = rounds["direct"], rounds["pool"]
    ratio = statistics.mean(pooled) / statistics.mean(direct)
    print(f"\nreal engine ({LLM_KEY}, {args.threads} llama.cpp thread(s), "
          f"{args.concurrency} slots, {args.jobs} jobs x {args.max_tokens} max tokens, "
          f"{args.rounds} rounds)")
    print(f"direct SDK : {statistics.mean(direct):.1f} tokens/s (mean of rounds)")
    print(f"pool       : {statistics.mean(pooled):.1f} tokens/s (mean of rounds)")
    print(f"ratio pool/direct = {ratio:.2f} (goal >= {GOAL_RATIO}) -> "
          f"{'OK' if ratio >= GOAL_RATIO else 'BELOW GOAL'}")


if __name__ == "__main__":
    main()
