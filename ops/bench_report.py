#!/usr/bin/env python
"""Every benchmark of the project in one run, written as one report (Markdown and JSON).

    ops/bench [--quick | --full] [--out ops] [--only SECTION[,SECTION...]]
              [--jobs N] [--sizes 100,1000,10000] [--concurrency 4] [--cancels N] ...

Each figure has the pool's number, its peer's number measured in the same run against the
same simulator, and their ratio; a figure with nothing to compare with is given against its
goal instead. Sections (each starts its own Redis and simulator):

pool        pool vs direct SDK calls at the same concurrency (`ops/bench_pool.py`), vs a
            naive Celery app with a client per job on the prefork pool (`ops/naive_app.py`);
            enqueue rate; queue overhead; worker peak memory
slots       chat tokens/s through the pool with 1, 4 and 8 slots (goal: 4 slots >= 2.5x one)
cancel      revoke -> cancel at LM Studio vs direct SDK cancel() (`ops/bench_cancel.py`)
corpus      `embed_corpus` chunks/s vs direct SDK embed() at two timing profiles; a 10,000-line
            batch file enqueued; producer peak memory on a 20 MB (--full: 1 GB) corpus
            (`ops/bench_corpus.py`)
scale       100 -> 10,000 jobs: throughput, producer and worker peak memory, pool vs naive
admission   mixed big/small flood on one instance's KV cells with vs without admission;
            slot utilisation of small jobs (goal >= 90%) and, for the 3/4-big and 1/4-big
            floods, as a fraction of what the KV cells allow with each job at prompt +
            max_tokens (goal >= 0.9, 0 failed) with the idle time by cause; 16 threads vs
            the rule; exact prompt counts vs the local bound; GGUF metadata read vs
            gguf.GGUFReader (goal < 100 ms) (`ops/bench_admission.py`)
flower      jobs/s with Flower attached vs without, Flower's memory (`ops/bench_flower.py`)
simulator   the simulator's fragments/s and embedString/s vs their goals
            (`ops/bench_simulator.py`)
real-engine real SmolLM2-135M tokens/s through the pool vs direct SDK (goal >= 0.9x;
            `ops/bench_real_engine.py`); skipped without the local-models extra
gateway     `lmq serve` with the openai async client vs JobQueue at the same concurrency
            (goals >= 0.95x, < 5 ms added p50), with the HTTP floor in the same rounds
            (the openai client against a server that only waits); streaming time to first
            content vs the job's time to first token; a 10,000-line batch file uploaded
            and accepted (goal < 10 s) (`ops/bench_gateway.py`)

`--quick` (default) takes a few minutes; `--full` uses the sizes of the goals. A section
that cannot run here is recorded as skipped with its reason; a section that fails is
recorded as failed and makes the exit status 1.

`--merge` replaces only the rows of the sections run (`--only`) in the report already in
`--out`, keeps every other row and the original run's header, and names the sections
replaced with their own run (mode, time, machine, load average) above the table: a
section redone after a change without re-running the rest (an hour's worth on --full).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.benchlib import figure  # noqa: E402

SECTIONS = ("pool", "slots", "cancel", "corpus", "scale", "admission", "flower", "simulator",
            "real-engine", "gateway", "priority")
QUICK = {"jobs": 200, "pool_rounds": 2, "enqueue_jobs": 2000, "jobs_per_slot": 4, "cancels": 20,
         "corpus_mb": 1, "batch_lines": 10000, "memory_mb": 20, "sizes": "100,300",
         "admission_jobs": 64, "gguf_gib": 8,
         "flower_jobs": 2000, "flower_max_tasks": 1000, "simulator_s": 5,
         "engine_jobs": 12, "engine_rounds": 6, "priority_backlog": 1000,
         "priority_arrivals": 10, "tenant_big": 1000, "tenant_small": 10}
FULL = {"jobs": 1000, "pool_rounds": 5, "enqueue_jobs": 10000, "jobs_per_slot": 12, "cancels": 200,
        "corpus_mb": 20, "batch_lines": 10000, "memory_mb": 1024, "sizes": "100,1000,10000",
        "admission_jobs": 256, "gguf_gib": 8,
        "flower_jobs": 20000, "flower_max_tasks": 10000, "simulator_s": 20,
        "engine_jobs": 24, "engine_rounds": 10, "priority_backlog": 5000,
        "priority_arrivals": 60, "tenant_big": 10000, "tenant_small": 10}
FLOATS = ("corpus_mb", "memory_mb", "gguf_gib", "simulator_s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few minutes (default)")
    mode.add_argument("--full", action="store_true", help="the goals' sizes (long)")
    parser.add_argument("--out", type=Path, default=ROOT / "ops", help="report folder")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma list of sections: {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--merge", action="store_true",
                        help="replace only these sections' rows in the report in --out")
    for name in QUICK:
        kind = str if name == "sizes" else float if name in FLOATS else int
        parser.add_argument(f"--{name.replace('_', '-')}", default=None, type=kind,
                            help=f"quick: {QUICK[name]}, full: {FULL[name]}")
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
    """Import only this section's module (`ops/benchlib/<name>_section.py`), so a missing
    dependency of one section cannot stop the others, and run it."""
    a = args
    runners: dict[str, Callable[[Any], list[figure.Figure]]] = {
        "pool": lambda m: m.measure(a.jobs, a.concurrency, a.enqueue_jobs, say,
                                    a.pool_rounds),
        "slots": lambda m: m.measure(a.jobs_per_slot, say),
        "cancel": lambda m: m.measure(a.cancels, say),
        "corpus": lambda m: m.measure(a.corpus_mb, a.batch_lines, a.memory_mb, say),
        "scale": lambda m: m.measure(a.sizes, a.concurrency, say),
        "admission": lambda m: m.measure(a.admission_jobs, a.gguf_gib, say),
        "flower": lambda m: m.measure(a.flower_jobs, a.flower_max_tasks, say),
        "simulator": lambda m: m.measure(a.simulator_s, say),
        "real-engine": lambda m: m.measure(a.engine_jobs, a.engine_rounds, say),
        "gateway": lambda m: m.measure(a.jobs, a.concurrency, a.batch_lines, say),
        "priority": lambda m: m.measure(a.priority_backlog, a.priority_arrivals, say,
                                        a.tenant_big, a.tenant_small),
    }
    module = importlib.import_module(f"ops.benchlib.{name.replace('-', '_')}_section")
    return runners[name](module)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, started_at = time.monotonic(), figure.now()
    figures: list[figure.Figure] = []
    skipped: list[str] = []
    failed: list[str] = []
    for name in args.only:
        try:
            figures += run_section(name, args)
        except figure.SectionSkippedError as exc:
            say(f"section {name} skipped: {exc}")
            skipped.append(f"{name} ({exc})")
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the rest
            say(f"section {name} FAILED: {type(exc).__name__}: {exc}")
            failed.append(f"{name} ({type(exc).__name__}: {str(exc)[:200]})")
    meta = {"mode": args.mode, "started": started_at, "machine": figure.machine(),
            "elapsed_s": time.monotonic() - started, "skipped": skipped, "failed": failed,
            "command": "ops/bench " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.merge:
        figures, meta = merged(args.out, figures, meta, args.only)
    md, js = figure.write(args.out, figures, meta)
    print(figure.markdown(figures, meta))
    say(f"wrote {md} and {js}")
    return 1 if failed else 0


def merged(out_dir: Path, figures: list[figure.Figure], meta: dict[str, Any],
           sections: list[str]) -> tuple[list[figure.Figure], dict[str, Any]]:
    """The report in `out_dir` with the rows of `sections` replaced by `figures` (in place of
    the first replaced row; at the end when the report had none of them)."""
    import json
    import os

    old = json.loads((out_dir / "bench-report.json").read_text())
    # Figure.section may carry a detail ("pool (4 threads)"): match on its first word.
    replaced = {s.replace("-", " ") for s in sections}
    kept, at = [], None
    for row in old["figures"]:
        row.pop("ratio", None)
        if row["section"].split(" (")[0] in replaced:
            at = len(kept) if at is None else at
            continue
        kept.append(figure.Figure(**row))
    at = len(kept) if at is None else at
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    note = (f"{', '.join(sections)}: {meta['mode']} run {meta['started']} on "
            f"{meta['machine']}, load average {load}, {meta['elapsed_s']:.0f} s, command "
            f"`{meta['command']}`")
    earlier = [n for n in old["meta"].get("replaced", [])  # a section's last run only
               if not set(n.split(": ", 1)[0].split(", ")) <= set(sections)]
    out_meta = {**old["meta"], "replaced": [*earlier, note]}
    for key in ("skipped", "failed"):
        out_meta[key] = [*old["meta"].get(key, []), *meta[key]]
    return kept[:at] + figures + kept[at:], out_meta


if __name__ == "__main__":
    from ops.benchlib.entry import run

    raise SystemExit(run(main))
