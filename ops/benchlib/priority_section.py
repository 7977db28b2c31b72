"""Priorities (issue 20): urgent jobs behind a bulk backlog, and what priorities cost.

One worker (4 threads, the simulator's 4 slots) on a private Redis and simulator:

* latency: a backlog of low-priority jobs is queued at once, then one job a second arrives;
  each arrival's wait (started - enqueued) is measured when it is high priority (the pool)
  and when it is low like the backlog (the peer: first come, first served). Goal: p95 within
  one running job's length (median run_s of the backlog) + 50 ms.
* throughput: the same number of jobs drained with mixed priorities (a third each) vs all
  normal (one list: what the pool did before priorities). Goal: >= 0.97.

* tenants: a small tenant's jobs submitted right after a big tenant's backlog (all normal
  priority), the time from their submission until the last of them finished, vs the same
  jobs on the idle worker (its time alone), measured in the same run. Goal: <= 2x (fair
  turns, `workers.delivery.tenant_turns`; without them it is the whole backlog's time).
  The rest of the backlog is then deleted from the broker, not drained.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from ops.benchlib.figure import Figure
from ops.benchlib.stack import CHAT, stack
from producers.job_queue import JobQueue
from producers.worker_process import WorkerProcess
from workers import waiting
from workers.contract import ChatJob, ChatResult
from workers.settings import Settings

ARRIVAL_GAP_S = 1.0  # the 1/s arrivals
JOB = {"maxTokens": 16}


def measure(backlog: int, arrivals: int, say: Any, tenant_big: int = 10000,
            tenant_small: int = 10) -> list[Figure]:
    say(f"priority: {arrivals} arrivals at 1/s behind {backlog} low jobs; drain {backlog} "
        f"jobs mixed vs all normal; tenants with {tenant_big} and {tenant_small} jobs")
    with stack() as st:
        env = {"LMQ_BROKER_URL": st.redis_url, "LMQ_RESULT_BACKEND": st.redis_url,
               "LMQ_LMSTUDIO_HOST": st.host, "LMQ_GPU_MEMORY": "24GiB",
               "LMQ_CONCURRENCY": "4"}
        worker = WorkerProcess(CHAT, env).start()
        queue = JobQueue(Settings(broker_url=st.redis_url, result_backend=st.redis_url))
        try:
            _wait(lambda: CHAT in queue.served_models(refresh=True), 120, "worker ready")
            urgent, run_s = _arrival_waits(queue, backlog, arrivals, "high")
            fifo, _ = _arrival_waits(queue, backlog, arrivals, "low")
            plain = _drain_rate(queue, backlog, mixed=False)
            mixed = _drain_rate(queue, backlog, mixed=True)
            alone = _small_tenant_s(queue, 0, tenant_small)
            shared = _small_tenant_s(queue, tenant_big, tenant_small)
            say(f"priority: small tenant's {tenant_small} jobs: {shared:.2f} s behind "
                f"{tenant_big} of another tenant, {alone:.2f} s alone: {shared / alone:.2f}x "
                "(goal <= 2x)")
        finally:
            queue.close()
            worker.stop()
    bound_ms = 1000 * run_s + 50
    return [
        Figure("priority", f"high job's wait behind {backlog} low jobs, p95", "ms",
               1000 * _p95(urgent), 1000 * _p95(fifo), "same arrivals at low priority (FIFO)",
               higher_is_better=False, goal=f"<= one job ({1000 * run_s:.0f} ms) + 50 ms",
               notes={"bound_ms": round(bound_ms, 1), "met": 1000 * _p95(urgent) <= bound_ms,
                      "median_ms": round(1000 * statistics.median(urgent), 1)}),
        Figure("priority", f"drain {backlog} jobs, mixed priorities", "jobs/s", mixed, plain,
               "all normal (one list)", goal=">= 0.97x"),
        Figure("priority", f"small tenant's {tenant_small} jobs behind another's "
               f"{tenant_big}", "s", shared, alone, "the same jobs alone",
               higher_is_better=False, goal="<= 2x", notes={"met": shared <= 2 * alone}),
    ]


def _small_tenant_s(queue: JobQueue, big: int, small: int) -> float:
    """Seconds from submitting tenant `small`'s jobs (just after `big` jobs of tenant `big`)
    until the last of them finished; what is left of the big backlog is then deleted."""
    backlog = queue.submit_many([ChatJob(model=CHAT, messages=f"big {n}", config=JOB)
                                 for n in range(big)], tenant="big") if big else []
    submitted = time.time()
    handles = queue.submit_many([ChatJob(model=CHAT, messages=f"small {n}", config=JOB)
                                 for n in range(small)], tenant="small")
    finished = _drained(queue, [h.id for h in handles])
    broker = queue.publisher.broker
    for by_tenant in waiting.tenant_lists(broker, CHAT).values() if broker and backlog else []:
        broker.delete(by_tenant.get("big", "lmq:none"))  # the rest of the backlog: not run
    return finished - submitted


def _arrival_waits(queue: JobQueue, backlog: int, arrivals: int,
                   priority: str) -> tuple[list[float], float]:
    """Waits of `arrivals` jobs of `priority` arriving 1/s behind `backlog` low jobs, and the
    backlog's median run_s."""
    bulk = queue.submit_many([ChatJob(model=CHAT, messages=f"bulk {n}", config=JOB)
                              for n in range(backlog)], priority="low")
    handles = []
    for n in range(arrivals):
        handles.append(queue.chat(CHAT, f"arrival {n}", config=JOB, priority=priority))
        time.sleep(ARRIVAL_GAP_S)  # the arrival rate being benchmarked, not a synchronisation
    results: list[ChatResult] = [h.result(timeout=600) for h in handles]
    waits = [r.timing.started_at - (r.timing.enqueued_at or r.timing.started_at)
             for r in results]
    sample = [h.result(timeout=600) for h in bulk[-50:]]
    run_s = statistics.median(r.timing.run_s for r in sample)
    _drained(queue, [h.id for h in bulk])
    return waits, run_s


def _drain_rate(queue: JobQueue, jobs: int, *, mixed: bool) -> float:
    levels = ("high", "normal", "low") if mixed else ("normal",)
    batch = [ChatJob(model=CHAT, messages=f"drain {n}", config=JOB,
                     priority=levels[n % len(levels)]) for n in range(jobs)]
    started = time.time()
    handles = queue.submit_many(batch)
    finished = _drained(queue, [h.id for h in handles])
    return jobs / (finished - started)


def _drained(queue: JobQueue, ids: list[str]) -> float:
    """Wait until every job finished; the last one's finish time."""
    last = 0.0
    pending = list(ids)
    deadline = time.monotonic() + 900
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} jobs not finished")
        found = queue.fetch_results(pending)
        for state, payload in found.values():
            if state == "SUCCESS":
                last = max(last, float(payload["timing"]["finished_at"]))
        pending = [i for i in pending if found[i][0] not in ("SUCCESS", "FAILURE", "REVOKED")]
        if pending:
            time.sleep(0.2)  # polling the results store, not synchronising a test
    return last


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)
