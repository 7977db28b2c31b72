"""Where a run's idle slot-time went: the cells, the pool, or the end of the flood.

`ops/bench_admission.py` sends every job at once, so at any moment of a run the jobs whose
prediction has not started yet are all waiting. Sweeping the simulator's prediction
intervals (slot acquired -> channel closed), each idle slot-second falls in one of:

* ``cells``: jobs wait, but none fits the instance's free cells beside the running ones
  (each job counted at its safe size, prompt + max output: what a scheduler that never
  lets a prediction fail must keep for it). The workload's, not the pool's.
* ``fit``: a waiting job would have fit a free slot and the free cells, yet was not
  running: the pool's own overhead (wake-up and hand-off latency, a job held back behind
  one that waits, too few threads holding jobs, the first jobs' start).
* ``tail``: every job has started; the last ones run out with slots to spare (any
  schedule has such a tail; the bound's linear program leaves it out).

The three plus busy add up to slots x span.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Interval", "idle_split"]


@dataclass(frozen=True)
class Interval:
    """One prediction: when its slot was taken and when its channel closed."""

    kind: str  # job class, a key of the sizes
    start_s: float
    end_s: float


def idle_split(intervals: Iterable[Interval], sizes: dict[str, int], slots: int,
               cells: int) -> dict[str, float]:
    """Slot-seconds busy and idle by cause (module docstring), and the span."""
    runs = sorted(intervals, key=lambda i: i.start_s)
    total = {k: sum(1 for r in runs if r.kind == k) for k in sizes}
    events = sorted([(r.start_s, 1, r.kind) for r in runs] + [(r.end_s, -1, r.kind) for r in runs])
    out = {"busy": 0.0, "cells": 0.0, "fit": 0.0, "tail": 0.0, "span_s": 0.0}
    if not events:
        return out
    running = {k: 0 for k in sizes}
    started = {k: 0 for k in sizes}
    last_t = events[0][0]
    for t, step, kind in events:
        _account(out, t - last_t, running, started, total, sizes, slots, cells)
        running[kind] += step
        started[kind] += step > 0
        last_t = t
    out["span_s"] = events[-1][0] - events[0][0]
    return out


def _account(out: dict[str, float], dt_s: float, running: dict[str, int],
             started: dict[str, int], total: dict[str, int], sizes: dict[str, int],
             slots: int, cells: int) -> None:
    if dt_s <= 0:
        return
    busy = sum(running.values())
    out["busy"] += busy * dt_s
    idle = max(0, slots - busy) * dt_s
    waiting = [k for k in sizes if started[k] < total[k]]
    free_cells = cells - sum(n * sizes[k] for k, n in running.items())
    if not waiting:
        out["tail"] += idle
    elif any(sizes[k] <= free_cells for k in waiting):
        out["fit"] += idle
    else:
        out["cells"] += idle
