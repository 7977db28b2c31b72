"""Flower's cost, reusing `ops/bench_flower.py`: the pool's jobs/s with `celery -A workers
flower` attached vs the same pool without it (one run, instant predictions), and Flower's
resident memory at the end vs once it holds `max_tasks` tasks (it should level off there)."""

from __future__ import annotations

from typing import Any

from ops import bench_flower
from ops.benchlib.figure import Figure

SECTION = "flower"


def measure(jobs: int, max_tasks: int, say: Any) -> list[Figure]:
    args = bench_flower.parse_args(["--jobs", str(jobs), "--max-tasks", str(max_tasks)])
    say(f"flower: {jobs} completion jobs without, then with Flower (max_tasks {max_tasks}), "
        f"{args.workers} worker x {args.concurrency} threads")
    without, with_flower = bench_flower.measure(args)
    return figures(without, with_flower, jobs, max_tasks)


def figures(without: dict[str, Any], with_flower: dict[str, Any], jobs: int,
            max_tasks: int) -> list[Figure]:
    samples = [(done, memory) for done, memory in with_flower["memory"]]
    out = [Figure(SECTION, f"completion throughput, {jobs} jobs, Flower attached", "jobs/s",
                  with_flower["jobs_per_s"], without["jobs_per_s"], "same pool without Flower",
                  notes={"flower_memory_kib": samples})]
    final_done, final = samples[-1]
    full = [(done, memory) for done, memory in samples[:-1] if done >= max_tasks]
    if full:  # a sample taken once Flower held max_tasks tasks, before the end
        done, memory = full[0]
        out.append(Figure(SECTION, f"Flower RSS after {final_done} jobs (max_tasks "
                          f"{max_tasks}: it should level off)", "MiB", final["VmRSS"] / 1024,
                          memory["VmRSS"] / 1024, f"Flower RSS after {done} jobs",
                          higher_is_better=False))
    return out
