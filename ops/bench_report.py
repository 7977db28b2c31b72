#!/usr/bin/env python
"""Every benchmark of the project in one run, written as one report (Markdown and JSON).

    ops/bench [--quick | --full] [--out ops] [--only pool,slots,cancel,corpus,scale]
              [--jobs N] [--sizes 100,1000,10000] [--concurrency 4] [--cancels N]

Each figure has the pool's number, its peer's number measured in the same run against the
same simulator, and their ratio. Sections (each starts its own Redis and simulator):

pool    pool vs direct SDK calls at the same concurrency (`ops/bench_pool.py`), vs a naive
        Celery app with a client per job on the prefork pool (`ops/naive_app.py`); enqueue
        rate; queue overhead; worker peak memory
slots   chat tokens/s through the pool with 1, 4 and 8 slots (goal: 4 slots >= 2.5x one)
cancel  revoke -> cancel at LM Studio vs direct SDK cancel() (`ops/bench_cancel.py`)
corpus  `embed_corpus` chunks/s vs direct SDK embed() (`ops/bench_corpus.py`)
scale   100 -> 10,000 jobs: throughput, producer and worker peak memory, pool vs naive

`--quick` (default) takes a few minutes; `--full` uses the sizes of the goals.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.benchlib import figure  # noqa: E402

SECTIONS = ("pool", "slots", "cancel", "corpus", "scale")
QUICK = {"jobs": 200, "enqueue_jobs": 2000, "jobs_per_slot": 4, "cancels": 20,
         "corpus_mb": 1, "sizes": "100,300"}
FULL = {"jobs": 1000, "enqueue_jobs": 10000, "jobs_per_slot": 12, "cancels": 200,
        "corpus_mb": 20, "sizes": "100,1000,10000"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few minutes (default)")
    mode.add_argument("--full", action="store_true", help="the goals' sizes (long)")
    parser.add_argument("--out", type=Path, default=ROOT / "ops", help="report folder")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma list of sections")
    parser.add_argument("--concurrency", type=int, default=4)
    for name in QUICK:
        kind = {"sizes": str, "corpus_mb": float}.get(name, int)
        parser.add_argument(f"--{name.replace('_', '-')}", default=None, type=kind)
    args = parser.parse_args(argv)
    defaults = FULL if args.full else QUICK
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.mode = "full" if args.full else "quick"
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s]
    args.only = [s for s in args.only.split(",") if s]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def say(line: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", flush=True)


def run_section(name: str, args: argparse.Namespace) -> list[figure.Figure]:
    from ops.benchlib import (
        cancel_section,
        corpus_section,
        pool_section,
        scale_section,
        slots_section,
    )

    if name == "pool":
        return pool_section.measure(args.jobs, args.concurrency, args.enqueue_jobs, say)
    if name == "slots":
        return slots_section.measure(args.jobs_per_slot, say)
    if name == "cancel":
        return cancel_section.measure(args.cancels, say)
    if name == "corpus":
        return corpus_section.measure(args.corpus_mb, say)
    return scale_section.measure(args.sizes, args.concurrency, say)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, started_at = time.monotonic(), figure.now()
    figures: list[figure.Figure] = []
    skipped: list[str] = []
    for name in args.only:
        try:
            figures += run_section(name, args)
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the rest
            say(f"section {name} FAILED: {type(exc).__name__}: {exc}")
            skipped.append(f"{name} ({type(exc).__name__}: {str(exc)[:200]})")
    meta = {"mode": args.mode, "started": started_at, "machine": figure.machine(),
            "elapsed_s": time.monotonic() - started, "skipped": skipped,
            "command": "ops/bench " + " ".join(argv if argv is not None else sys.argv[1:])}
    md, js = figure.write(args.out, figures, meta)
    print(figure.markdown(figures, meta))
    say(f"wrote {md} and {js}")
    return 1 if skipped else 0


if __name__ == "__main__":
    raise SystemExit(main())
