"""Where a benchmark run's idle slot-time went (`ops.benchlib.admission_gap`)."""

from __future__ import annotations

import pytest

from ops.benchlib.admission_gap import Interval, idle_split

SIZES = {"big": 600, "small": 100}  # cells at prompt + max_tokens; 1,000 cells, 2 slots


def split(*runs: Interval) -> dict[str, float]:
    return idle_split(runs, SIZES, slots=2, cells=1000)


def test_cells_full_for_every_waiting_job_is_the_workloads_idle_time() -> None:
    out = split(Interval("big", 0, 1), Interval("big", 1, 2))  # two big never fit together
    assert out["span_s"] == 2 and out["busy"] == pytest.approx(2)
    assert (out["cells"], out["fit"], out["tail"]) == pytest.approx((1, 0, 1))


def test_a_waiting_job_that_fit_counts_against_the_pool() -> None:
    # The small job could have run beside the big one from 0; it started at 0.5.
    out = split(Interval("big", 0, 1), Interval("small", 0.5, 1))
    assert out["fit"] == pytest.approx(0.5) and out["tail"] == pytest.approx(0.0)
    assert out["busy"] + out["cells"] + out["fit"] + out["tail"] == pytest.approx(2 * 1)


def test_after_the_last_start_idle_slots_are_the_tail() -> None:
    out = split(Interval("small", 0, 1), Interval("small", 0, 3))
    assert (out["fit"], out["cells"], out["tail"]) == pytest.approx((0, 0, 2))


def test_no_runs_no_time() -> None:
    assert split()["span_s"] == 0
