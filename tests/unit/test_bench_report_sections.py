"""`ops/bench` sections turn each benchmark's results into figures: the right numbers on the
pool and peer sides, ratios to the goal where there is no peer, skips that do not fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ops import bench_report
from ops.benchlib import (
    admission_section,
    corpus_section,
    flower_section,
    real_engine_section,
    simulator_section,
)


def run(ok: int, no_cells: int, ok_per_s: float, utilisation: float, bound: float = 1.0,
        threads: int = 6) -> dict[str, Any]:
    """One configuration's summary as `bench_admission.workload_results` gives it."""
    of = utilisation / bound
    return {"jobs": 64, "jobs_per_run": 64, "ok": ok, "no_cells": no_cells,
            "ok_per_s": ok_per_s,
            "threads": threads, "utilisation": utilisation, "rounds": [{}, {}],
            "bound_safe": bound, "of_bound_safe": of, "bound_gpu": bound + 0.07,
            "of_bound_gpu": utilisation / (bound + 0.07),
            "bound_reserved": bound, "of_bound_reserved": of,
            "idle": {"cells": 0.3, "fit": 0.05, "tail": 0.02},
            "range": {"utilisation": (utilisation, utilisation), "of_bound_safe": (of, of)}}


def test_admission_figures_compare_with_and_without_admission() -> None:
    from ops.benchlib.admission_workload import MIXED, MORE_THREADS, TYPICAL, Run

    runs = {Run(MIXED, True): run(64, 0, 8.0, 0.57, bound=0.6),
            Run(MIXED, False): run(16, 48, 4.0, 0.3),
            Run("small", True): run(64, 0, 30.0, 0.9),
            Run(TYPICAL, True): run(64, 0, 12.0, 0.88),
            Run(MIXED, True, MORE_THREADS): run(64, 0, 8.1, 0.58, 0.6, threads=8),
            Run(TYPICAL, True, MORE_THREADS): run(64, 0, 12.0, 0.89, threads=8),
            Run(MIXED, True, exact_count=True): run(64, 0, 8.5, 0.57, bound=0.6),
            Run(TYPICAL, True, exact_count=True): run(64, 0, 13.0, 0.94)}
    figures = admission_section.workload_figures({"runs": runs, "sizes": {}})
    flood, small, mixed_bound, typical_bound = figures[:4]
    assert (flood.pool, flood.peer, flood.ratio) == (8.0, 4.0, 2.0)
    assert "0 with admission, 48 without (48 found no free KV cells)" in flood.name
    assert small.peer_is_goal and small.pool == pytest.approx(90.0)
    assert small.ratio == pytest.approx(90 / 90)
    assert "no peer, goal: 90.0 %" in small.as_row()
    # The goal's figure: against the bound at prompt + max_tokens, not with hindsight.
    assert mixed_bound.pool == pytest.approx(57.0) and mixed_bound.peer == pytest.approx(60.0)
    assert mixed_bound.ratio == pytest.approx(0.57 / 0.6)
    assert "with hindsight (cells used, not max_tokens) the bound would be 67%" in (
        mixed_bound.name)
    assert "idle: 0.30 cells full, 0.05 while a waiting job fit, 0.02 tail" in mixed_bound.name
    assert ">= 0.90x of the bound, 0 failed" in mixed_bound.goal
    assert typical_bound.ratio == pytest.approx(0.88)
    exact = figures[-1]
    assert exact.pool == pytest.approx(88.0) and exact.peer == pytest.approx(94.0)


def test_merge_replaces_one_sections_rows_and_says_so(tmp_path: Path) -> None:
    from ops.benchlib.figure import Figure, write

    def fig(section: str, name: str) -> Figure:
        return Figure(section, name, "x", 1.0, 1.0, "peer")

    write(tmp_path, [fig("pool (4 threads)", "a"), fig("admission", "old 1"),
                     fig("admission", "old 2"), fig("flower", "b")],
          {"mode": "full", "started": "then", "machine": "m", "elapsed_s": 1.0,
           "command": "ops/bench --full", "skipped": [], "failed": []})
    meta = {"mode": "quick", "started": "now", "machine": "m", "elapsed_s": 2.0,
            "command": "ops/bench --only admission --merge", "skipped": [], "failed": []}
    figures, out = bench_report.merged(tmp_path, [fig("admission", "new")], meta,
                                       ["admission"])
    assert [f.name for f in figures] == ["a", "new", "b"]
    assert out["mode"] == "full" and out["started"] == "then"
    assert out["replaced"][0].startswith("admission: quick run now on m, load average ")
    write(tmp_path, figures, out)
    assert "Rows of these sections were replaced by a later run: admission: quick run now" in (
        (tmp_path / "bench-report.md").read_text())


def test_gguf_figure_is_ours_vs_gguf_reader_lower_is_better() -> None:
    class Shape:
        def kv_bytes_per_token(self) -> int:
            return 131072

    results = {"ours_ms": [9.0, 2.0, 3.0], "theirs_ms": [40.0, 50.0, 60.0],
               "full_ms": [20.0], "size": 8 * 1024**3, "used": 4096, "shape": Shape()}
    (read,) = admission_section.gguf_figures(results)
    assert (read.pool, read.peer, read.higher_is_better) == (3.0, 50.0, False)
    assert read.goal == "< 100 ms" and "first: 9.0 ms" in read.name


def test_flower_memory_is_compared_with_the_first_sample_past_max_tasks() -> None:
    def mib(n: int) -> dict[str, int]:
        return {"VmRSS": n * 1024, "VmHWM": n * 1024}

    with_flower = {"jobs_per_s": 90.0, "memory": [(500, mib(50)), (1000, mib(70)),
                                                  (1500, mib(72)), (2000, mib(73))]}
    speed, memory = flower_section.figures({"jobs_per_s": 100.0}, with_flower, 2000, 1000)
    assert speed.ratio == pytest.approx(0.9)
    assert (memory.pool, memory.peer) == (73.0, 70.0)
    assert "after 1000 jobs" in memory.peer_name
    only_speed = flower_section.figures({"jobs_per_s": 100.0}, with_flower, 2000, 5000)
    assert len(only_speed) == 1


def test_simulator_rates_are_given_against_their_goals() -> None:
    fragments, embeds = simulator_section.figures(3000.0, 500.0)
    assert fragments.peer_is_goal and fragments.ratio == pytest.approx(1.5)
    assert embeds.peer == 1000.0 and embeds.ratio == pytest.approx(0.5)


def test_corpus_figures_one_per_timing_profile_with_the_rounds_paired_ratio() -> None:
    from ops.bench_corpus import Comparison

    found = Comparison(chunks=2400, tokens=540_000, pool=[200.0, 150.0, 230.0],
                       direct=[220.0, 250.0, 230.0], threads=8, pool_cpu_s=3.0,
                       pool_chunks=2000, direct_cpu_s=2.0, direct_chunks=2000)
    lmstudio, stress = (corpus_section.figure(p, 3.0, found) for p in corpus_section.PROFILES)
    # issue 22: CPU per chunk of each side, pool (producer + workers) vs direct
    cpu = corpus_section.cpu_figure("stress", found)
    assert (cpu.pool, cpu.peer, cpu.unit, cpu.higher_is_better) == (1.5, 1.0, "ms", False)
    assert "CPU/chunk pool 1.50 ms, direct 1.00 ms" in stress.peer_name
    # rounds' ratios 0.91, 0.6, 1.0: median 0.91 (the medians' ratio would be 200 / 230)
    assert lmstudio.ratio == pytest.approx(200 / 220)
    assert (lmstudio.pool, lmstudio.peer) == (200.0, 230.0)
    for fig, profile in ((lmstudio, "lmstudio"), (stress, "stress")):
        assert fig.goal == {"lmstudio": ">= 0.9x", "stress": ">= 0.95x"}[profile]
        assert fig.unit == "chunks/s"
        assert fig.notes["profile"] == profile and fig.notes["direct_threads"] == 8
    assert "LM Studio-like timing" in lmstudio.name and "stress timing" in stress.name
    assert "8 threads (the fastest of" in stress.peer_name  # picked once, then one run a round
    assert "LM Studio-bound" in lmstudio.notes["what"]
    assert "CPU-bound" in stress.notes["what"]
    assert lmstudio.notes["timing"]["embedding_tokens_per_s"] > 0
    assert stress.notes["timing"]["embedding_tokens_per_s"] == 0
    # --full's 20 MB applies to the stress profile; the LM Studio-bound one stays short
    assert corpus_section.profile_mb("stress", 20) == 20
    assert corpus_section.profile_mb("lmstudio", 20) < 20
    assert corpus_section.profile_mb("lmstudio", 1) == 1


def test_corpus_batch_and_memory_figures_are_ratios_to_their_goals() -> None:
    from ops.bench_corpus import BatchFile, MemoryRun

    batch = corpus_section.batch_figure(BatchFile(lines=10_000, validate_s=0.8, submit_s=2.5))
    assert batch.peer_is_goal and not batch.higher_is_better
    assert (batch.pool, batch.peer, batch.unit) == (2.5, 10.0, "s")
    assert batch.ratio == pytest.approx(0.25) and "10,000 lines" in batch.name
    memory = corpus_section.memory_figure(MemoryRun(corpus_mb=1024.0, elapsed_s=680.0,
                                                    peak_mb=297.0, embedded=504_089))
    assert memory.peer_is_goal and not memory.higher_is_better
    assert (memory.pool, memory.peer) == (297.0, 500.0)
    assert "1,024 MB corpus" in memory.name and "504,089 chunks" in memory.name
    assert "741 chunks/s" in memory.name  # 504,089 / 680 s


def test_bench_modes_size_the_corpus_goals() -> None:
    quick, full = bench_report.parse_args([]), bench_report.parse_args(["--full"])
    assert quick.batch_lines == full.batch_lines == 10_000
    assert full.memory_mb == 1024 and quick.memory_mb < full.memory_mb


def test_real_engine_ratio_is_the_median_of_the_rounds_ratios() -> None:
    from ops.bench_real_engine import Comparison, Round, Side

    def side(tokens_per_s: float, slots_busy: float) -> Side:
        return Side(tokens_per_s, 300, 300 / tokens_per_s, 3.0, 0.2, 0.0, slots_busy)

    result = Comparison([Round("direct", side(100.0, 0.98), side(50.0, 0.96), 1.0),
                         Round("pool", side(90.0, 0.97), side(90.0, 0.95), 0.0),
                         Round("direct", side(100.0, 0.99), side(120.0, 0.97), 1.0)])
    tokens, slots = real_engine_section.figures(result, 2, 32, 0.9)
    # rounds' ratios 0.5, 1.0, 1.2: median 1.0 (the medians' ratio would be 90 / 100)
    assert tokens.ratio == pytest.approx(1.0) and tokens.goal == ">= 0.9x"
    assert (tokens.pool, tokens.peer) == (90.0, 100.0)
    assert tokens.notes["first_side"] == ["direct", "pool", "direct"]
    assert (slots.pool, slots.peer) == pytest.approx((96.0, 98.0))


def test_a_skipped_section_is_reported_without_failing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(real_engine_section, "missing_reason",
                        lambda: "package 'xllamacpp' is missing")
    status = bench_report.main(["--only", "real-engine", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "bench-report.json").read_text())
    assert status == 0 and report["meta"]["failed"] == []
    assert report["meta"]["skipped"] == ["real-engine (no local models: package 'xllamacpp' "
                                         "is missing)"]
    assert "Skipped in this run: real-engine" in (tmp_path / "bench-report.md").read_text()
