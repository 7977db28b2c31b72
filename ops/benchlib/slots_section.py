"""Chat tokens/s through the pool with 1, 4 and 8 slots (simulator slots = LMQ_SLOTS).

The simulator decodes each slot at a fixed rate, so what this measures is whether the
pool keeps every slot busy: the goal is 4 slots >= 2.5x one slot's tokens/s.
"""

from __future__ import annotations

import time
from typing import Any

from ops.benchlib.figure import Figure
from ops.benchlib.stack import CHAT, stack
from producers.local_pool import local_pool

REPLY_TOKENS = 32
DECODE_TOKENS_PER_S = 100.0


def tokens_per_s(redis_url: str, host: str, slots: int, jobs: int) -> float:
    env = {"LMQ_CONCURRENCY": str(slots), "LMQ_SLOTS": str(slots)}
    with local_pool(redis_url, host, [CHAT], extra_env=env) as pool:
        config = {"max_tokens": REPLY_TOKENS}
        pool.queue.chat(CHAT, "warm up", config=config).result(timeout=120)
        started = time.perf_counter()
        handles = pool.queue.submit_many([{"model": CHAT, "messages": f"slot question {i}",
                                           "config": config} for i in range(jobs)])
        results = [handle.result(timeout=900) for handle in handles]
        elapsed = time.perf_counter() - started
    return sum(r.stats.predicted_tokens_count for r in results) / elapsed


def measure(jobs_per_slot: int, say: Any) -> list[Figure]:
    timing = {"decode_tokens_per_s": DECODE_TOKENS_PER_S, "reply_min_tokens": REPLY_TOKENS,
              "reply_max_tokens": REPLY_TOKENS}
    rates: dict[int, float] = {}
    with stack(timing) as parts:
        for slots in (1, 4, 8):
            say(f"chat tokens/s with {slots} slot(s)")
            parts.sim.admin.set_timing(parallel_slots=slots)
            rates[slots] = tokens_per_s(parts.redis_url, parts.host, slots,
                                        max(8, jobs_per_slot * slots))
    return [Figure("slots", f"chat tokens/s, {slots} slots", "tokens/s", rates[slots], rates[1],
                   "1 slot", goal=">= 2.5x" if slots == 4 else "")
            for slots in (4, 8)] + [
        Figure("slots", "chat tokens/s, 1 slot", "tokens/s", rates[1],
               DECODE_TOKENS_PER_S, "one slot's simulated decode rate")]
