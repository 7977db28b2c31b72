"""The utilisation bound of ops/bench_admission.py: the best schedule memory permits."""

from __future__ import annotations

import math

import pytest

from ops.benchlib.admission_bound import (
    JobClass,
    configurations,
    min_makespan_s,
    utilisation_bound,
)

MIB = 1024**2
ROOM = 200 * MIB


def mixed(big_s: float, small_s: float, small_bytes: int) -> list[JobClass]:
    return [JobClass("big", big_s, 94 * MIB), JobClass("small", small_s, small_bytes)]


def test_two_big_and_two_small_fit_bound_is_big_work_over_two() -> None:
    jobs = mixed(48.0, 16.0, 4 * MIB)  # 48 big and 16 small jobs of 1 s
    assert (2, 2) in configurations(jobs, 4, ROOM) and (3, 0) not in configurations(jobs, 4, ROOM)
    assert min_makespan_s(jobs, 4, ROOM) == pytest.approx(24.0)  # max(64 / 4, 48 / 2)
    assert utilisation_bound(jobs, 4, ROOM) == pytest.approx(64 / 96)


def test_small_jobs_that_do_not_fit_beside_two_big_ones_lower_the_bound() -> None:
    jobs = mixed(48.0, 16.0, 13 * MIB)  # 2 x 94 + 13 > 200: (1 big, 3 small) carries them
    assert (2, 1) not in configurations(jobs, 4, ROOM)
    assert min_makespan_s(jobs, 4, ROOM) == pytest.approx(24.0 + 16.0 / 6)
    assert utilisation_bound(jobs, 4, ROOM) == pytest.approx(0.6)


def test_slots_bind_when_memory_does_not() -> None:
    assert utilisation_bound(mixed(16.0, 48.0, 4 * MIB), 4, ROOM) == pytest.approx(1.0)
    assert utilisation_bound([JobClass("small", 64.0, MIB)], 4, ROOM) == pytest.approx(1.0)
    assert min_makespan_s([JobClass("small", 64.0, MIB)], 4, ROOM) == pytest.approx(16.0)


def test_a_class_that_never_fits_has_no_finite_makespan() -> None:
    assert math.isinf(min_makespan_s([JobClass("huge", 1.0, ROOM + 1)], 4, ROOM))
    with pytest.raises(ValueError):
        min_makespan_s([JobClass(str(i), 1.0, MIB) for i in range(3)], 4, ROOM)
