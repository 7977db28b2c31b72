"""Real tokens (SmolLM2-135M on llama.cpp, `python -m simulator --engine real`) through the
pool vs direct SDK `respond()` at the same concurrency, reusing `ops/bench_real_engine.py`:
alternating rounds with the same prompts on both sides, ratio = median of the rounds'
ratios. Needs the local-models extra (`ops/setup` installs it); without it the section is
skipped."""

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
    say(f"real engine: {LLM_KEY}, {jobs} chat jobs x {rounds} alternating rounds, pool vs "
        f"direct SDK, {args.concurrency} slots, {args.threads} llama.cpp thread(s)")
    return figures(bench_real_engine.measure(args, say), args.concurrency, args.max_tokens,
                   bench_real_engine.GOAL_RATIO)


def figures(result: Any, concurrency: int, max_tokens: int, goal_ratio: float) -> list[Figure]:
    """`result` is a `bench_real_engine.Comparison`."""
    rounds = result.rounds
    pooled, direct = result.tokens_per_s("pool"), result.tokens_per_s("direct")
    cpu = {side: {part: round(result.mean_cpu_s(side, f"{part}_cpu_s"), 3)
                  for part in ("llama", "client", "redis")} for side in ("direct", "pool")}
    notes = {
        "pool_rounds": pooled, "direct_rounds": direct,
        "round_ratios": [r.ratio for r in rounds],
        "first_side": [r.first for r in rounds],
        "tokens": {"pool": [r.pool.tokens for r in rounds],
                   "direct": [r.direct.tokens for r in rounds]},
        "mean_cpu_s_per_round": cpu,
        "slots_busy": {"pool": [round(r.pool.slots_busy, 3) for r in rounds],
                       "direct": [round(r.direct.slots_busy, 3) for r in rounds]},
        "llama_cores": {"pool": [round(r.pool.llama_share, 3) for r in rounds],
                        "direct": [round(r.direct.llama_share, 3) for r in rounds]},
        "served_model_check_s": [r.served_check_s for r in rounds],
    }
    return [Figure(
        SECTION, f"{LLM_KEY} chat tokens/s, {concurrency} slots, up to {max_tokens} tokens "
        f"per job", "tokens/s", statistics.median(pooled), statistics.median(direct),
        f"direct SDK respond(), {concurrency} threads (ratio: median of {len(rounds)} "
        f"alternating rounds, range {min(notes['round_ratios']):.2f}-"
        f"{max(notes['round_ratios']):.2f}; client CPU/round worker+producer "
        f"{cpu['pool']['client']:.2f} s, direct {cpu['direct']['client']:.2f} s)",
        goal=f">= {goal_ratio}x", notes=notes, paired_ratio=result.ratio),
        # Steadier than tokens/s on a shared machine: only what the pool controls (how soon
        # a freed slot gets the next prediction), not how much CPU llama.cpp was given.
        Figure(SECTION, "share of the slots' time holding a prediction, during the runs "
               "above", "%", 100 * statistics.median(notes["slots_busy"]["pool"]),
               100 * statistics.median(notes["slots_busy"]["direct"]),
               f"direct SDK respond(), {concurrency} threads (medians of the rounds)")]
