"""Admission on LM Studio 0.4's memory model, reusing `ops/bench_admission.py` (its
workloads, its sparse GGUF file; what each measures is in that script's docstring):
successful jobs/s of the 3/4-big flood with admission vs without (`LMQ_ADMISSION=false`,
failing with llama.cpp's no-free-KV-cells error); raw slot utilisation of the small
workload (cells never bind) against 90%; for each mixed workload the utilisation the
instance's KV cells allow a scheduler that never lets a prediction fail (each job at
prompt + max_tokens) and the fraction of it reached (the issue's goal, >= 0.9), with the
idle slot-time split by cause; the 3/4-big flood with the worker's lookahead vs without;
the mixed workloads on 16 threads vs the worker's rule, and with exact prompt counts vs the
local bound; GGUF metadata read time vs gguf.GGUFReader. A run's thread count is the pool's
(`celery inspect stats`), without the lookahead's."""

from __future__ import annotations

import statistics
from typing import Any

from ops import bench_admission
from ops.benchlib.admission_workload import (
    GOAL_UTILISATION,
    MIB,
    MIXED,
    MORE_THREADS,
    TYPICAL,
    Run,
)
from ops.benchlib.figure import Figure
from workers.settings import Settings

SECTION = "admission"
LOOKAHEAD = Settings.model_fields["admission_lookahead"].default
GOAL_PCT = 100 * GOAL_UTILISATION


def measure(jobs: int, gguf_gib: float, say: Any) -> list[Figure]:
    say(f"admission: GGUF metadata of a sparse {gguf_gib:g} GiB file, ours vs gguf.GGUFReader")
    gguf = bench_admission.gguf_results(gguf_gib)
    say(f"admission: {jobs} chat jobs per run, 2 runs per configuration (small, 3/4 big, "
        f"1/4 big; without admission, on {MORE_THREADS} threads, with exact prompt counts)")
    return workload_figures(bench_admission.workload_results(jobs)) + gguf_figures(gguf)


def workload_figures(results: dict[str, Any]) -> list[Figure]:
    runs: dict[Run, dict[str, Any]] = results["runs"]
    figures = [throughput_figure(runs, results["sizes"]),
               goal_figure("small", runs[Run("small", True)], "KV cells never bind")]
    figures += [bound_figure(name, runs[Run(name, True)]) for name in (MIXED, TYPICAL)]
    if Run(MIXED, True, lookahead=0) in runs:
        figures.append(compare_figure(
            MIXED, runs[Run(MIXED, True)], runs[Run(MIXED, True, lookahead=0)],
            "lookahead (one more job taken per job waiting for KV, up to "
            f"LMQ_ADMISSION_LOOKAHEAD={LOOKAHEAD})", "without it (LMQ_ADMISSION_LOOKAHEAD=0)"))
    for name in (MIXED, TYPICAL):
        figures.append(compare_figure(
            name, runs[Run(name, True, MORE_THREADS)], runs[Run(name, True)],
            f"LMQ_CONCURRENCY={MORE_THREADS}",
            "the worker's rule (LMQ_SLOTS + LMQ_PREFETCH_THREADS, + lookahead)"))
    for name in (MIXED, TYPICAL):
        figures.append(compare_figure(
            name, runs[Run(name, True)], runs[Run(name, True, exact_count=True)],
            "prompt tokens bounded locally (default)",
            "exact counts (LMQ_LOCAL_COUNT_MAX_TOKENS=0)"))
    return figures


def throughput_figure(runs: dict[Run, dict[str, Any]], sizes: dict[str, Any]) -> Figure:
    on, off = runs[Run(MIXED, True)], runs[Run(MIXED, False)]
    notes = {"sizes": sizes, "runs": [{**run._asdict(), **summary}
                                      for run, summary in runs.items()]}
    return Figure(SECTION, f"{MIXED} flood, {_rounds(on)}: successful "
                  f"jobs/s; failed: {_failed(on)} with admission, {_failed(off)} without "
                  f"({off['no_cells']} found no free KV cells)", "jobs/s", on["ok_per_s"],
                  off["ok_per_s"],
                  f"without admission, {off['threads']} threads", notes=notes)


def goal_figure(name: str, run: dict[str, Any], why: str) -> Figure:
    return Figure(SECTION, f"slot utilisation, {name} ({why}), {run['threads']} threads, "
                  f"{_rounds(run)}, {_range(run, 'utilisation')}; {_idle(run)}", "%",
                  100 * run["utilisation"], GOAL_PCT, "goal", goal=f">= {GOAL_PCT:.0f}%",
                  peer_is_goal=True)


def bound_figure(name: str, run: dict[str, Any]) -> Figure:
    """Utilisation vs what the cells allow at prompt + max_tokens per job (the ratio is the
    median of the rounds'); the bound with hindsight (the cells jobs ended up using) is
    named, not the goal: no scheduler that never lets a prediction fail can reach it."""
    return Figure(
        SECTION, f"slot utilisation as a fraction of what the KV cells allow, {name}, "
        f"{run['threads']} threads, {_rounds(run)}, failed {_failed(run)}; ratio "
        f"{_range(run, 'of_bound_safe')}; {_idle(run)}; with hindsight (cells used, not "
        f"max_tokens) the bound would be {100 * run['bound_gpu']:.0f}% "
        f"({run['of_bound_gpu']:.2f} of it)", "%",
        100 * run["utilisation"], 100 * run["bound_safe"],
        "bound by KV cells and slots, each job at prompt + max_tokens (best schedule)",
        goal=f">= {GOAL_UTILISATION:.2f}x of the bound, 0 failed (issue 18)",
        paired_ratio=run["of_bound_safe"])


def compare_figure(name: str, pool: dict[str, Any], peer: dict[str, Any], pool_name: str,
                   peer_name: str) -> Figure:
    return Figure(SECTION, f"slot utilisation, {name}, {pool_name}, {pool['threads']} "
                  f"threads, {_range(pool, 'utilisation')}; vs the bound "
                  f"{pool['of_bound_safe']:.2f} (peer {peer['of_bound_safe']:.2f})", "%",
                  100 * pool["utilisation"], 100 * peer["utilisation"],
                  f"{peer_name}, {peer['threads']} threads, {_range(peer, 'utilisation')}")


def gguf_figures(gguf: dict[str, Any]) -> list[Figure]:
    ours, theirs = statistics.median(gguf["ours_ms"]), statistics.median(gguf["theirs_ms"])
    size_gib = gguf["size"] / (1024 * MIB)
    notes = {key: gguf[key] for key in ("ours_ms", "theirs_ms", "full_ms", "size", "used")}
    notes["kv_bytes_per_token"] = gguf["shape"].kv_bytes_per_token()
    return [Figure(SECTION, f"GGUF metadata read, sparse {size_gib:.1f} GiB file, "
                   f"median of {len(gguf['ours_ms'])} (first: {gguf['ours_ms'][0]:.1f} ms)",
                   "ms", ours, theirs, f"gguf.GGUFReader, median of {len(gguf['theirs_ms'])}",
                   higher_is_better=False, goal=f"< {bench_admission.GOAL_GGUF_MS:.0f} ms",
                   notes=notes)]


def _rounds(run: dict[str, Any]) -> str:
    return f"{run['jobs_per_run']} jobs, median of {len(run['rounds'])} runs"


def _range(run: dict[str, Any], name: str) -> str:
    low, high = run["range"][name]
    return f"range {low:.2f}-{high:.2f}"


def _idle(run: dict[str, Any]) -> str:
    """The idle slot-time by cause (`ops.benchlib.admission_gap`), as shares of slots x span."""
    idle = run.get("idle")
    if not idle:
        return "idle split not measured"
    return (f"idle: {idle['cells']:.2f} cells full, {idle['fit']:.2f} while a waiting job fit, "
            f"{idle['tail']:.2f} tail")


def _failed(run: dict[str, Any]) -> int:
    return int(run["jobs"]) - int(run["ok"])
