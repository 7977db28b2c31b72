"""The admission benchmark's workloads: jobs, workers, the simulator's slot times, the bound.

What each workload and figure measures is in `ops/bench_admission.py`'s docstring (the
script); the bound's arithmetic in `ops.benchlib.admission_bound`. `workload_results()` is
what `ops/bench_admission.py` prints and `ops.benchlib.admission_section` reports.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import redis
from celery import Celery

from ops.benchlib.admission_bound import JobClass, min_makespan_s
from ops.benchlib.admission_gap import Interval, idle_split
from producers.redis_server import RedisServer
from producers.worker_process import WorkerProcess
from workers import keys
from workers.admission.instance import instance_group
from workers.celery_config import celery_config
from workers.contract import TASK_CHAT, ChatJob, queue_name
from workers.settings import Settings

LLM = "llama-3.2-1b-instruct"
MIB, GIB = 1024**2, 1024**3
CELLS = 1024  # the instance's KV cells (its context length), unified: two big jobs at once
SLOTS = 4  # its parallel predictions
BIG_MAX_TOKENS, SMALL_MAX_TOKENS = 200, 40
BIG_PROMPT = "word " * 300  # 300 tokens for the simulator's tokenizer
REPLY_TOKENS = 150  # every reply, cut at max_tokens: big 150, small 40
GOAL_UTILISATION = 0.9  # issue 18: of what the KV cells allow
SIM_CONFIG = {
    "timing": {"decode_tokens_per_s": 100, "parallel_slots": SLOTS, "unified_kv": True},
    "faults": {"reply_tokens": REPLY_TOKENS},
    "models": {LLM: {"context_length": CELLS},
               "text-embedding-nomic-embed-text-v1.5": {"loaded": False}},
}
WORKLOADS = {"small": 0.0, "mixed-3/4-big": 0.75, "mixed-1/4-big": 0.25}  # big share
MIXED, TYPICAL = "mixed-3/4-big", "mixed-1/4-big"



class Run(NamedTuple):
    """One measured configuration."""

    workload: str  # a WORKLOADS key
    admission: bool  # LMQ_ADMISSION
    threads: int | None = None  # LMQ_CONCURRENCY; None: the worker's own rule
    exact_count: bool = False  # LMQ_LOCAL_COUNT_MAX_TOKENS=0: LM Studio counts every prompt
    lookahead: int | None = None  # LMQ_ADMISSION_LOOKAHEAD; None: the default

    @property
    def label(self) -> str:
        threads = "auto" if self.threads is None else str(self.threads)
        return (f"{self.workload}:{'on' if self.admission else 'off'}:{threads}"
                + (":exact" if self.exact_count else "")
                + (f":la{self.lookahead}" if self.lookahead is not None else ""))


MORE_THREADS = 4 * SLOTS  # the lookahead comparison: 16 threads vs the rule's 4 + 2
DEFAULT_RUNS: tuple[Run, ...] = (
    Run(MIXED, True), Run(MIXED, False), Run(TYPICAL, True), Run("small", True),
    Run(MIXED, True, MORE_THREADS), Run(TYPICAL, True, MORE_THREADS),
    Run(MIXED, True, exact_count=True), Run(TYPICAL, True, exact_count=True),
    Run(MIXED, True, lookahead=0),
)
Sizes = dict[str, dict[str, int]]  # job class -> {"gpu"|"safe"|"reserved": cells}


@contextmanager
def stack() -> Iterator[tuple[Celery, Any, str]]:
    """(client app, simulator, redis url) on a private redis-server."""
    from simulator.testing import running_simulator

    with RedisServer() as server, running_simulator(SIM_CONFIG, in_process=False) as sim:
        app = Celery("bench-admission")
        app.conf.update(celery_config(Settings(broker_url=server.url,
                                               result_backend=server.url)))
        try:
            yield app, sim, server.url
        finally:
            app.close()


def worker_env(redis_url: str, host: str, run: Run) -> dict[str, str]:
    env = {"LMQ_BROKER_URL": redis_url, "LMQ_RESULT_BACKEND": redis_url,
           "LMQ_LMSTUDIO_HOST": host, "LMQ_GPU_MEMORY": "24GiB",  # cells bind, not memory
           "LMQ_GPU_RESERVE": "0", "LMQ_SLOTS": str(SLOTS),
           "LMQ_ADMISSION": "true" if run.admission else "false", "PYTHONUNBUFFERED": "1"}
    if run.threads:
        env["LMQ_CONCURRENCY"] = str(run.threads)
    if run.exact_count:
        env["LMQ_LOCAL_COUNT_MAX_TOKENS"] = "0"
    if run.lookahead is not None:
        env["LMQ_ADMISSION_LOOKAHEAD"] = str(run.lookahead)
    return env


def start_worker(app: Celery, env: dict[str, str]) -> tuple[WorkerProcess, int]:
    """A started worker and its pool's thread count."""
    worker = WorkerProcess(LLM, env, name=f"bench-{uuid.uuid4().hex[:6]}").start()
    deadline = time.monotonic() + 90
    while not any(worker.hostname in r for r in app.control.ping([worker.hostname], 0.5)):
        if not worker.is_running() or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{worker.log_tail()}")
    stats = app.control.inspect([worker.hostname], timeout=5).stats() or {}
    return worker, int(stats[worker.hostname]["pool"]["max-concurrency"])


def jobs(count: int, big_share: float) -> list[dict[str, Any]]:
    """`count` chat jobs, a `big_share` fraction of them big, spread evenly."""
    return [job_payload(int((i + 1) * big_share) > int(i * big_share), i) for i in range(count)]


def job_payload(big: bool, index: int) -> dict[str, Any]:
    text = BIG_PROMPT if big else f"Tell me about item {index}."
    job = ChatJob(model=LLM, config={"max_tokens": BIG_MAX_TOKENS if big else SMALL_MAX_TOKENS},
                  messages=[{"role": "user", "content": text}])
    return {**job.model_dump(mode="json"), "submitted_at": time.time()}


def run_workload(app: Celery, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    started = time.monotonic()
    handles = [app.send_task(TASK_CHAT, args=[p], queue=queue_name(LLM)) for p in payloads]
    ok = no_cells = other = 0
    for handle in handles:
        handle.get(timeout=300, propagate=False)
        if handle.successful():
            ok += 1
        elif "failed to find a memory slot" in str(handle.result):  # llama.cpp: no free cells
            no_cells += 1
        else:
            other += 1
    elapsed_s = time.monotonic() - started
    return {"jobs": len(payloads), "ok": ok, "no_cells": no_cells, "other": other,
            "elapsed_s": elapsed_s, "ok_per_s": ok / elapsed_s}


def intervals(sim: Any) -> list[Interval]:
    """Every prediction of the run: its class, slot acquired -> channel closed."""
    sizes = {(e["conn"], e["msg"].get("channelId")): _max_tokens(e["msg"])
             for e in sim.admin.log(type="channelCreate")}
    return [Interval("big" if sizes.get((c["conn"], c["channel_id"])) == BIG_MAX_TOKENS
                     else "small", c["slot_acquired_t"], c["closed_t"])
            for c in sim.admin.channels()
            if c["endpoint"] == "predict" and c["slot_acquired_t"] and c["closed_t"]]


def slot_stats(runs: list[Interval]) -> dict[str, Any]:
    """Busy slot-seconds per job class, the span, utilisation and mean concurrency."""
    busy = {"big": 0.0, "small": 0.0}
    for run in runs:
        busy[run.kind] += run.end_s - run.start_s
    first = min((r.start_s for r in runs), default=0.0)
    span_s = max((r.end_s for r in runs), default=0.0) - first
    total = busy["big"] + busy["small"]
    return {"busy_s": busy, "span_s": span_s,
            "utilisation": total / (SLOTS * span_s) if span_s else 0.0,
            "concurrency": total / span_s if span_s else 0.0}


def with_idle(run: dict[str, Any], runs: list[Interval], sizes: Sizes) -> dict[str, Any]:
    """Add the idle slot-time by cause (`admission_gap`), as fractions of slots x span."""
    split = idle_split(runs, {k: s["safe"] for k, s in sizes.items()}, SLOTS, CELLS)
    whole = SLOTS * split["span_s"] or 1.0
    run["idle"] = {cause: split[cause] / whole for cause in ("cells", "fit", "tail")}
    return run


def _max_tokens(create: dict[str, Any]) -> int | None:
    from simulator.kvconfig import checkbox, stack_fields

    stack = (create.get("creationParameter") or {}).get("predictionConfigStack")
    value = checkbox(stack_fields(stack).get("llm.prediction.maxPredictedTokens"))
    return int(value) if isinstance(value, (int, float)) else None


def with_bounds(run: dict[str, Any], sizes: Sizes, exact_count: bool) -> dict[str, Any]:
    """Add, per accounting, the utilisation bound and the fraction of it: "safe" (prompt +
    max_tokens: the goal's), "gpu" (with hindsight: prompt + reply) and "reserved" (what
    admission reserved; with exact prompt counts that is "safe")."""
    for basis in ("gpu", "safe", "reserved"):
        size_of = "safe" if exact_count and basis == "reserved" else basis
        classes = [JobClass(kind, busy_s, sizes[kind][size_of])
                   for kind, busy_s in run["busy_s"].items() if busy_s > 0]
        makespan_s = min_makespan_s(classes, SLOTS, CELLS) if classes else 0.0
        total = sum(c.busy_s for c in classes)
        run[f"bound_{basis}"] = total / (SLOTS * makespan_s) if makespan_s else 1.0
        run[f"of_bound_{basis}"] = makespan_s / run["span_s"] if run["span_s"] else 0.0
    return run


def probe_sizes(app: Celery, sim: Any, redis_url: str) -> Sizes:
    """KV cells of one big and one small job: used in the simulator (prompt + reply, from
    its stats), safe (that prompt + max_tokens) and reserved by admission (the instance's
    ticket, read while the job runs, slowed by a prefill fault); needs a worker running."""
    client = redis.Redis.from_url(redis_url)
    sim.admin.set_faults(slow_prefill_s=1.0)
    try:
        return {kind: _probe_one(app, sim, client, kind == "big") for kind in ("big", "small")}
    finally:
        sim.admin.clear_faults()
        client.close()


def _probe_one(app: Celery, sim: Any, client: redis.Redis, big: bool) -> dict[str, int]:
    info_key = keys.admission(instance_group(sim.host, LLM)) + ":info"
    handle = app.send_task(TASK_CHAT, args=[job_payload(big, 10)], queue=queue_name(LLM))
    deadline = time.monotonic() + 30
    while True:
        reserved = [t["b"] for t in map(json.loads, client.hgetall(info_key).values())
                    if t["k"] == "job"]
        if reserved:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"probe job not admitted: {reserved}")
        time.sleep(0.02)
    stats = handle.get(timeout=60)["stats"]
    prompt = int(stats["prompt_tokens_count"])
    return {"gpu": prompt + int(stats["predicted_tokens_count"]), "reserved": int(reserved[0]),
            "safe": prompt + (BIG_MAX_TOKENS if big else SMALL_MAX_TOKENS)}


def measure(app: Celery, sim: Any, redis_url: str, run: Run, count: int, rounds: int,
            sizes: Sizes | None) -> tuple[dict[str, Any], Sizes | None]:
    """`rounds` runs of one workload on one warm worker; probes the sizes if not known
    (on a worker with admission on and the default prompt counting)."""
    worker, pool_threads = start_worker(app, worker_env(redis_url, sim.host, run))
    try:
        if sizes is None and run.admission and not run.exact_count:
            sizes = probe_sizes(app, sim, redis_url)
        runs = []
        for _ in range(rounds):
            sim.admin.clear_log()
            result = run_workload(app, jobs(count, WORKLOADS[run.workload]))
            predictions = intervals(sim)
            result.update(slot_stats(predictions))
            if sizes and run.admission:  # without admission jobs fail: no bound
                result = with_idle(with_bounds(result, sizes, run.exact_count), predictions,
                                   sizes)
            runs.append(result)
    finally:
        worker.stop()
    return summarise(runs, pool_threads), sizes


SUMMARY_KEYS = ("ok_per_s", "utilisation", "concurrency", "bound_gpu", "of_bound_gpu",
                "bound_safe", "of_bound_safe", "bound_reserved", "of_bound_reserved",
                "elapsed_s")
IDLE_CAUSES = ("cells", "fit", "tail")


def summarise(runs: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    """Medians of the rounds (min and max under `range`), failures summed, every round kept."""
    out: dict[str, Any] = {"threads": threads, "rounds": runs, "range": {},
                           "jobs_per_run": int(runs[0]["jobs"]) if runs else 0}
    for name in ("jobs", "ok", "no_cells", "other"):
        out[name] = sum(int(r[name]) for r in runs)
    for name in SUMMARY_KEYS:
        values = [float(r[name]) for r in runs if name in r]
        if values:
            out[name] = statistics.median(values)
            out["range"][name] = (min(values), max(values))
    idle = [r["idle"] for r in runs if "idle" in r]
    if idle:
        out["idle"] = {c: statistics.median(i[c] for i in idle) for c in IDLE_CAUSES}
    return out


def workload_results(count: int, rounds: int = 2, runs: tuple[Run, ...] = DEFAULT_RUNS
                     ) -> dict[str, Any]:
    """{"sizes": probe sizes, "runs": {Run: summary}}; used by ops/bench.

    A summary holds the medians over the rounds (ok_per_s, utilisation, bound_gpu,
    of_bound_gpu, bound_reserved, of_bound_reserved, ...), their min and max under
    "range", failures summed, the pool's thread count, and every round under "rounds".
    """
    with stack() as (app, sim, redis_url):
        sizes: Sizes | None = None
        # First a run that can probe the sizes (admission on, default counting).
        ordered = sorted(runs, key=lambda r: not (r.admission and not r.exact_count))
        results = {}
        for run in ordered:
            results[run], sizes = measure(app, sim, redis_url, run, count, rounds, sizes)
    return {"sizes": sizes, "runs": {run: results[run] for run in runs}}


def print_workloads(results: dict[str, Any]) -> None:
    sizes = results["sizes"]
    if sizes:
        print("KV cells per job, used by LM Studio / safe (prompt + max_tokens) / reserved by "
              "admission: " + ", ".join(f"{kind} {s['gpu']} / {s['safe']} / {s['reserved']}"
                                        for kind, s in sizes.items())
              + f"; {CELLS} cells, {SLOTS} parallel")
    print(f"{'run':<26} {'thr':>3} {'jobs':>5} {'ok':>5} {'fail':>4} "
          f"{'ok/s':>13} {'slot util':>11} {'bound':>5} {'of bound':>11} "
          f"{'hindsight':>9} {'of it':>5}  idle: cells / fit / tail")
    for run, r in results["runs"].items():
        idle = r.get("idle") or {}
        print(f"{run.label:<26} {r['threads']:>3} {r['jobs']:>5} "
              f"{r['ok']:>5} {r['jobs'] - r['ok']:>4} {_ranged(r, 'ok_per_s'):>13} "
              f"{_ranged(r, 'utilisation'):>11} {r.get('bound_safe', 0):>5.2f} "
              f"{_ranged(r, 'of_bound_safe'):>11} {r.get('bound_gpu', 0):>9.2f} "
              f"{r.get('of_bound_gpu', 0):>5.2f}  "
              + " / ".join(f"{idle.get(c, 0):.2f}" for c in ("cells", "fit", "tail")))


def _ranged(run: dict[str, Any], name: str) -> str:
    if name not in run:
        return "-"
    low, high = run["range"][name]
    return f"{run[name]:.2f} ({low:.2f}-{high:.2f})" if high - low >= 0.005 else f"{run[name]:.2f}"


def parse_runs(text: str) -> tuple[Run, ...]:
    """"mixed-3/4-big:on:auto,small:on:4,mixed-1/4-big:on:auto:exact,mixed-3/4-big:on:auto:la0"
    -> runs ("laN": LMQ_ADMISSION_LOOKAHEAD=N)."""
    out = []
    for item in text.split(","):
        name, admission, threads, *extra = item.strip().split(":")
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}; one of {', '.join(WORKLOADS)}")
        lookahead = [int(e[2:]) for e in extra if e.startswith("la")]
        out.append(Run(name, admission == "on", None if threads == "auto" else int(threads),
                       "exact" in extra, lookahead[0] if lookahead else None))
    return tuple(out)
