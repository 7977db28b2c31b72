"""GPU-memory-aware admission, reusing `ops/bench_admission.py` (its workloads, its sparse
GGUF file): successful jobs/s of a mixed big/small flood with admission vs without
(`LMQ_ADMISSION=false`), the same flood on 8 worker threads vs 4, slot utilisation on small
jobs (goal >= 85%, nothing to compare with), GGUF metadata read time vs gguf.GGUFReader."""

from __future__ import annotations

import statistics
from typing import Any

from ops import bench_admission
from ops.benchlib.figure import Figure

SECTION = "admission"
Runs = dict[tuple[str, bool, int], dict[str, Any]]


def measure(jobs: int, gguf_gib: float, say: Any) -> list[Figure]:
    say(f"admission: GGUF metadata of a sparse {gguf_gib:g} GiB file, ours vs gguf.GGUFReader")
    gguf = bench_admission.gguf_results(gguf_gib)
    say(f"admission: {jobs} chat jobs per workload run (mixed with / without admission, "
        "mixed on 8 threads, small)")
    return workload_figures(bench_admission.workload_results(jobs)) + gguf_figures(gguf)


def workload_figures(runs: Runs) -> list[Figure]:
    slots = bench_admission.SLOTS
    on, off = runs[("mixed", True, slots)], runs[("mixed", False, slots)]
    wide, small = runs[("mixed", True, 2 * slots)], runs[("small", True, slots)]
    goal_pct = 100 * bench_admission.GOAL_UTILISATION
    notes = {"runs": [{"workload": name, "admission": admission, "threads": threads, **run}
                      for (name, admission, threads), run in runs.items()]}
    return [
        Figure(SECTION, f"mixed flood (3/4 big jobs), {on['jobs']} jobs: successful jobs/s; "
               f"failed: {_failed(on)} with admission, {_failed(off)} without "
               f"({off['oom']} out of memory)", "jobs/s", on["ok_per_s"], off["ok_per_s"],
               f"without admission, {slots} threads", notes=notes),
        Figure(SECTION, f"mixed flood, {wide['jobs']} jobs: successful jobs/s on "
               f"{2 * slots} worker threads", "jobs/s", wide["ok_per_s"], on["ok_per_s"],
               f"{slots} worker threads, with admission"),
        Figure(SECTION, f"slot utilisation, {small['jobs']} small jobs (memory not binding); "
               f"mixed flood: {100 * on['utilisation']:.0f}%", "%", 100 * small["utilisation"],
               goal_pct, "goal", goal=f">= {goal_pct:.0f}%", peer_is_goal=True),
    ]


def gguf_figures(gguf: dict[str, Any]) -> list[Figure]:
    ours, theirs = statistics.median(gguf["ours_ms"]), statistics.median(gguf["theirs_ms"])
    size_gib = gguf["size"] / bench_admission.GIB
    notes = {key: gguf[key] for key in ("ours_ms", "theirs_ms", "full_ms", "size", "used")}
    notes["kv_bytes_per_token"] = gguf["shape"].kv_bytes_per_token()
    return [Figure(SECTION, f"GGUF metadata read, sparse {size_gib:.1f} GiB file, "
                   f"median of {len(gguf['ours_ms'])} (first: {gguf['ours_ms'][0]:.1f} ms)",
                   "ms", ours, theirs, f"gguf.GGUFReader, median of {len(gguf['theirs_ms'])}",
                   higher_is_better=False, goal=f"< {bench_admission.GOAL_GGUF_MS:.0f} ms",
                   notes=notes)]


def _failed(run: dict[str, Any]) -> int:
    return int(run["jobs"]) - int(run["ok"])
