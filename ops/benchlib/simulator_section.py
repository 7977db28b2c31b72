"""The simulator's own throughput, reusing `ops/bench_simulator.py`: real-SDK driver
processes stream predictions (fragments/s) and call `embed` (embedString/s) with every
simulated delay at zero. Nothing to compare with: each rate is given against its goal."""

from __future__ import annotations

from typing import Any

from ops import bench_simulator
from ops.benchlib.figure import Figure

SECTION = "simulator"
PROCS, THREADS = 2, 4  # the script's defaults


def measure(seconds: float, say: Any) -> list[Figure]:
    say(f"simulator: fragments/s, then embedString/s, {PROCS} SDK driver processes x "
        f"{THREADS} threads, {seconds:g} s each")
    fragments, embeds = bench_simulator.rates(seconds, PROCS, THREADS)
    return figures(fragments, embeds)


def figures(fragments_per_s: float, embeds_per_s: float) -> list[Figure]:
    drivers = f"{PROCS} SDK processes x {THREADS} threads"
    goals = [("streamed fragments", "fragments/s", fragments_per_s,
              bench_simulator.GOAL_FRAGMENTS_PER_S),
             ("embed() calls", "embedString/s", embeds_per_s, bench_simulator.GOAL_EMBEDS_PER_S)]
    return [Figure(SECTION, f"{what}, {drivers}", unit, rate, goal, "goal",
                   goal=f">= {goal:,.0f} {unit}", peer_is_goal=True)
            for what, unit, rate, goal in goals]
