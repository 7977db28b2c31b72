"""Pool vs direct SDK calls, vs Celery's own floor, vs the Celery + SDK floor and vs the
naive Celery app; enqueue rate; queue overhead; worker memory. Reuses `ops/bench_pool.py`
and `ops/bench_naive.py`.

The worker runs as users run it: LMQ_SLOTS = `concurrency` predictions at once and its
default threads (slots + LMQ_PREFETCH_THREADS, which only receive the next jobs), as
`ops/bench_pool.py` does. With LMQ_CONCURRENCY = slots (no receiving threads), as this
section had, every slot waited for its next job's take and delivery after each job:
0.87x of direct at the LM Studio-like timing against 0.98x with the defaults (1,000 jobs,
same machine, 2026-12-04).
"""

from __future__ import annotations

import statistics
from typing import Any

from ops import bench_naive, bench_pool
from ops.benchlib import celery_floor
from ops.benchlib.figure import Figure
from ops.benchlib.memory import peak_kib
from ops.benchlib.stack import CHAT, stack
from producers.local_pool import local_pool


def measure(jobs: int, concurrency: int, enqueue_jobs: int, say: Any,
            rounds: int) -> list[Figure]:
    texts = bench_pool.prompts(jobs)
    slots = {"parallel_slots": concurrency}
    env = {"LMQ_SLOTS": str(concurrency)}
    with stack(slots) as parts:
        say(f"pool vs direct SDK vs naive Celery: {jobs} chat jobs, concurrency {concurrency}")
        with local_pool(parts.redis_url, parts.host, [CHAT], extra_env=env) as pool:
            pids = [pool.workers[0].process.pid]  # type: ignore[union-attr]
            vs_direct = [bench_pool.compare(pool.queue, parts.host, texts, concurrency,
                                            profile, rounds, pids)
                         for profile in bench_pool.PROFILES]
            stress = vs_direct[list(bench_pool.PROFILES).index("stress")]
            floor = celery_floor.measure(parts.redis_url, concurrency,
                                         celery_floor.default_threads(concurrency),
                                         bench_pool.prediction_s("stress"), jobs)
            sdk_floor = bench_pool.versus_sdk_floor(parts.redis_url, parts.host, texts,
                                                    concurrency, rounds)
            # the naive app and (b)/(c) below run on the stress timing compare() ends with
            pooled, _ = bench_pool.through_pool(pool.queue, texts)
            bulk, loop = bench_pool.enqueue_rates(pool.queue, enqueue_jobs)
            waits = bench_pool.queue_overhead_ms(pool.queue, 30)
            pool_kib = peak_kib(pool.workers[0].process.pid)  # type: ignore[union-attr]
        with bench_naive.naive_worker(parts.redis_url, parts.host, concurrency) as proc:
            app = bench_naive.client_app(parts.redis_url)
            naive = bench_naive.throughput(app, CHAT, texts, bench_pool.MAX_TOKENS)
            naive_wait = bench_naive.overhead_ms(app, CHAT, 30)
            naive_kib = bench_naive.tree_peak_kib(proc.pid)
            app.close()
    section = f"pool ({concurrency} slots)"
    return [
        *(Figure(section, f"chat throughput, {jobs} jobs, {_timing(c.profile)}", "jobs/s",
                 statistics.median(c.pooled), statistics.median(c.direct),
                 f"direct SDK, {concurrency} threads (ratio: median of {rounds} alternating "
                 f"rounds; CPU/job worker {c.pool_cpu_ms:.1f} ms, direct {c.direct_cpu_ms:.1f} "
                 "ms)", goal=GOALS[c.profile], paired_ratio=c.ratio)
          for c in vs_direct),
        *(Figure(section, f"worker CPU per job, {_timing(c.profile)}", "ms", c.pool_cpu_ms,
                 c.direct_cpu_ms, "direct SDK process, same jobs (CPU times from /proc; "
                 f"ratio: median of {rounds} alternating rounds' ratios, CPU: their medians)",
                 higher_is_better=False, goal="<= 1.2x", paired_ratio=c.cpu_ratio)
          for c in vs_direct),
        Figure(section, f"worker CPU per job, {_timing('stress')}, against Celery's floor",
               "ms", stress.pool_cpu_ms, floor.cpu_ms,
               "Celery's floor (a stock Celery worker set up as the pool's, tasks that only "
               f"wait {floor.hold_ms:.0f} ms; the direct SDK process: "
               f"{stress.direct_cpu_ms:.1f} ms)", higher_is_better=False),
        Figure(section, f"Celery + SDK floor: chat throughput, {jobs} jobs, "
               f"{_timing('stress')}", "jobs/s", statistics.median(sdk_floor.pooled),
               statistics.median(sdk_floor.direct),
               f"direct SDK, {concurrency} threads (ratio: median of {rounds} alternating "
               "rounds; the floor: a stock Celery worker set up as the pool's whose task only "
               "runs the prediction as the pool's worker does, the SDK's AsyncClient on one "
               f"event loop; CPU/job floor {sdk_floor.pool_cpu_ms:.1f} ms, direct "
               f"{sdk_floor.direct_cpu_ms:.1f} ms)", paired_ratio=sdk_floor.ratio),
        Figure(section, f"worker CPU per job, {_timing('stress')}, against the Celery + SDK "
               "floor", "ms", stress.pool_cpu_ms, sdk_floor.pool_cpu_ms,
               "the Celery + SDK floor's (above; lmstudio-queue's own work per job is the "
               "difference)", higher_is_better=False),
        Figure(section, f"chat throughput, {jobs} jobs", "jobs/s", pooled,
               naive["jobs_per_s"], f"naive Celery (prefork -c {concurrency}, client per job)"),
        Figure(section, f"enqueue rate, {enqueue_jobs} jobs", "jobs/s", bulk, loop,
               "send_task loop", goal=">= 1,000 jobs/s"),
        Figure(section, "queue overhead (enqueue to start), median of 30", "ms",
               statistics.median(waits), naive_wait, "naive Celery", higher_is_better=False,
               goal="< 5 ms"),
        Figure(section, f"worker peak RSS after {jobs} jobs", "MiB", pool_kib / 1024,
               naive_kib / 1024, f"naive prefork worker (parent + {concurrency} children)",
               higher_is_better=False),
    ]


# Issue 22's goals: pool / direct SDK throughput at the same concurrency.
GOALS = {"lmstudio": ">= 0.97x", "stress": ">= 0.9x"}


def _timing(profile: str) -> str:
    decode = bench_pool.PROFILES[profile]["decode_tokens_per_s"]
    what = "LM Studio-like timing" if profile == "lmstudio" else "stress timing"
    return f"{what} ({decode:.0f} tokens/s per slot)"
