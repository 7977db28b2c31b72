"""The best slot utilisation a workload can reach under a GPU-memory limit.

A workload is one or two job classes, each with its total busy slot-time (seconds a slot
is held by jobs of that class) and the KV bytes one of its jobs reserves. At any moment
the running jobs form a *configuration* (n_k jobs of class k) that must fit:
sum n_k <= slots and sum n_k x bytes_k <= room (GPU memory minus the weights). Spending
t_c seconds in configuration c does t_c x n_ck slot-seconds of class k, so the makespan is
at least the optimum of the linear program

    minimise sum_c t_c  subject to  sum_c t_c x n_ck >= busy_k for every class k, t_c >= 0

— a relaxation: jobs are divisible and all there at time 0 (no start-up, no tail of the
last few jobs). A basic optimal solution uses at most as many configurations as classes,
so with one or two classes trying every configuration and every pair is exact. The
utilisation bound is total busy / (slots x that makespan); a measured span S reaches
makespan / S of it.

Example (the 3/4-big workload of `ops/bench_admission.py`): 48 big and 16 small jobs of
about equal length d; two big jobs fit and two small ones fit beside them, so the best
configuration mix is (2 big, 2 small) for 8d then (2 big) for 16d: makespan >= 24d =
max(64d / 4 slots, 48d / 2), bound 64d / (4 x 24d) = 0.67. Had the small jobs not fit
beside two big ones, (1 big, 3 small) would carry them: makespan >= 26.7d, bound 0.60.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

__all__ = ["JobClass", "configurations", "min_makespan_s", "utilisation_bound"]


@dataclass(frozen=True)
class JobClass:
    name: str
    busy_s: float  # slot-seconds all jobs of the class held, summed
    nbytes: int  # KV bytes one job of the class reserves


def configurations(classes: list[JobClass], slots: int, room_bytes: int
                   ) -> list[tuple[int, ...]]:
    """Every non-empty mix of running jobs (count per class) that fits slots and memory."""
    ranges = [range(slots + 1)] * len(classes)
    return [mix for mix in itertools.product(*ranges)
            if 0 < sum(mix) <= slots
            and sum(n * c.nbytes for n, c in zip(mix, classes, strict=True)) <= room_bytes]


def min_makespan_s(classes: list[JobClass], slots: int, room_bytes: int) -> float:
    """The linear program's optimum (module docstring); inf when some class never fits."""
    busy = [c.busy_s for c in classes]
    if len(classes) not in (1, 2):
        raise ValueError("one or two job classes (more need a real LP solver)")
    mixes = configurations(classes, slots, room_bytes)
    best = min((_alone(mix, busy) for mix in mixes), default=math.inf)
    if len(classes) == 2:
        best = min([best, *(_pair(a, b, busy) for a, b in itertools.combinations(mixes, 2))])
    return best


def utilisation_bound(classes: list[JobClass], slots: int, room_bytes: int) -> float:
    """Total busy / (slots x min_makespan_s): the best slot utilisation memory permits."""
    makespan_s = min_makespan_s(classes, slots, room_bytes)
    return sum(c.busy_s for c in classes) / (slots * makespan_s) if makespan_s else 1.0


def _alone(mix: tuple[int, ...], busy: list[float]) -> float:
    """Time in `mix` alone to do every class's work (inf if it runs none of a busy class)."""
    return max((b / n if n else (math.inf if b > 0 else 0.0)) for n, b in zip(mix, busy,
                                                                             strict=True))


def _pair(a: tuple[int, ...], b: tuple[int, ...], busy: list[float]) -> float:
    """t_a + t_b with both classes' work done exactly (inf if that needs negative time)."""
    det = a[0] * b[1] - a[1] * b[0]
    if det == 0:
        return math.inf
    t_a = (busy[0] * b[1] - busy[1] * b[0]) / det
    t_b = (a[0] * busy[1] - a[1] * busy[0]) / det
    return t_a + t_b if t_a >= 0 and t_b >= 0 else math.inf
