"""Corpus embedding throughput, reusing `ops/bench_corpus.py`: `embed_corpus` through the
pool (chunking included, its defaults but 256-token chunks) vs the best direct-SDK `embed()`
baseline on the same chunk texts (one client, N threads, the best N picked once before the
rounds: `bench_corpus.pick_threads`), in alternating rounds of the same run, one timed run
per side and round; the ratio is the median of the rounds' ratios.

Two figures, one per simulator timing profile (`bench_corpus.PROFILES`), one simulator and
pool switched between them at run time:

* `lmstudio`: LM Studio is the bottleneck (2 ms + tokens / 16,000 tokens/s per embedding,
  4 slots: an assumed GPU rate, not a measured one). Does the pool keep LM Studio as busy
  as a direct script? Its corpus is `corpus_mb` capped at the profile's default
  (`bench_corpus.PROFILE_CORPUS_MB`: ~10-20 s per side and round), so `--full` stays short.
* `stress`: 2 ms per call, no token pacing; LM Studio could do 2,000 embeddings/s, so both
  sides are bound by this machine's Python CPU: the client-side cost per chunk.

Then, with the local models installed, the same comparison on a real embedding model
(`ops/bench_corpus_real.py`: multilingual-e5-small on the simulator's real engine, Celery's
docs as the corpus, 512-token chunks; `REAL_ENGINE_MB` of it in both modes: this CPU embeds
~1.4 such chunks/s, so the 1 MB that `--full` used to take ran ~20 min per side and round).

Then the issue's other two goals, measured by the same `ops/bench_corpus.py` code (no peer:
their ratio is to the goal): a `batch_lines` OpenAI batch file validated, recorded and
enqueued (< 10 s for 10,000 lines), and the producer's peak RSS while `lmq embed-corpus`
embeds a realistic `memory_mb` corpus (< 500 MB for 1 GB; `--full` runs the 1 GB).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from ops import bench_corpus
from ops.benchlib.figure import Figure
from ops.benchlib.stack import EMBED, stack
from producers.local_pool import local_pool
from workers.settings import Settings

THREADS = [4, 8, 16]
ROUNDS = 3
REAL_ENGINE_MB = 0.05  # 41 chunks: ~30 s per side and round on e5-small here
BATCH_GOAL_S = 10.0  # a 10,000-line batch file validated and enqueued
MEMORY_GOAL_MB = 500.0  # peak producer RSS embedding a 1 GB corpus
PROFILES = ("lmstudio", "stress")
GOALS = {"lmstudio": ">= 0.9x", "stress": ">= 0.95x"}  # stress: issue 22
WHAT = {"lmstudio": "LM Studio-bound: token-paced simulator (an assumed 16k tokens/s per "
                    "slot, 4 slots), does the pool keep LM Studio as busy as a direct script",
        "stress": "client CPU-bound stress figure: 2 ms per call, no token pacing, the "
                  "simulator far faster than a GPU; measures the pool's Python CPU per chunk"}


def profile_mb(profile: str, corpus_mb: float) -> float:
    """The `lmstudio` profile's corpus is capped: its time is the simulated GPU's."""
    if profile == "lmstudio":
        return min(corpus_mb, bench_corpus.PROFILE_CORPUS_MB["lmstudio"])
    return corpus_mb


def measure(corpus_mb: float, batch_lines: int, memory_mb: float, say: Any) -> list[Figure]:
    figures = []
    with stack(bench_corpus.PROFILES[PROFILES[0]]) as parts, \
            tempfile.TemporaryDirectory(prefix="lmq-bench-corpus-") as tmp:
        work = Path(tmp)
        with local_pool(parts.redis_url, parts.host, [EMBED]) as pool:
            for profile in PROFILES:
                size = profile_mb(profile, corpus_mb)
                say(f"corpus embedding, {profile} timing: a {size} MB corpus, {ROUNDS} rounds")
                parts.sim.admin.set_timing(**bench_corpus.runtime_timing(profile))
                corpus = bench_corpus.generate_corpus(work / f"docs-{profile}", size)
                pids = tuple(w.process.pid for w in pool.workers if w.process is not None)
                found = bench_corpus.compare(corpus, work, pool.settings, parts.host, ROUNDS,
                                             THREADS, worker_pids=pids)
                figures.append(figure(profile, size, found))
                figures.append(cpu_figure(profile, found))
            say(f"OpenAI batch file: {batch_lines:,} lines validated and enqueued")
            db1 = parts.redis_url.rsplit("/", 1)[0] + "/1"  # no worker consumes it
            batch = bench_corpus.bench_batch_file(
                batch_lines, work, Settings(broker_url=db1, result_backend=db1,
                                            lmstudio_host=parts.host))
            figures.append(batch_figure(batch))
            say(f"producer memory: lmq embed-corpus on a {memory_mb:g} MB corpus")
            memory = bench_corpus.bench_memory(
                memory_mb, work, bench_corpus.env_for(parts.redis_url, parts.host), parts.sim,
                bench_corpus.runtime_timing(PROFILES[-1]))
            if memory.error:
                raise RuntimeError(f"lmq embed-corpus failed on the memory corpus: "
                                   f"{memory.error}")
            figures.append(memory_figure(memory))
    return figures + real_engine_figures(REAL_ENGINE_MB, say)


def real_engine_figures(corpus_mb: float, say: Any) -> list[Figure]:
    """The pool vs direct embed() on multilingual-e5-small (none without the local models)."""
    from ops import bench_corpus_real
    from simulator.real_models import EMBED_KEY, missing_reason

    if missing_reason():
        say("corpus embedding, real engine: skipped (no local models)")
        return []
    say(f"corpus embedding, real engine ({EMBED_KEY}): {corpus_mb:g} MB, {ROUNDS} rounds")
    found = bench_corpus_real.measure(corpus_mb, ROUNDS, 1, say=say)
    return [Figure("corpus", f"embed_corpus on a real model ({EMBED_KEY} on the simulator's "
                   f"real engine, this machine's CPU), {corpus_mb:g} MB of Celery's docs "
                   f"({found.chunks} chunks of up to 512 tokens)", "chunks/s",
                   statistics.median(found.pool), statistics.median(found.direct),
                   f"direct SDK embed() on the same engine, {found.concurrency} threads (the "
                   f"pool's embed calls in flight) "
                   f"(ratio: median of {len(found.pool)} alternating rounds)",
                   goal=">= 0.9x", paired_ratio=found.ratio,
                   notes={"profile": "real", "tokens": found.tokens, "pool": found.pool,
                          "direct": found.direct, "concurrency": found.concurrency})]


def batch_figure(batch: bench_corpus.BatchFile) -> Figure:
    return Figure("corpus", f"OpenAI batch file, {batch.lines:,} lines: validated, recorded "
                  f"and enqueued (validation alone {batch.validate_s:.2f} s)", "s",
                  batch.submit_s, BATCH_GOAL_S, "", higher_is_better=False,
                  goal=f"< {BATCH_GOAL_S:g} s", peer_is_goal=True,
                  notes={"validate_s": batch.validate_s})


def memory_figure(memory: bench_corpus.MemoryRun) -> Figure:
    return Figure("corpus", f"producer peak RSS, lmq embed-corpus on a {memory.corpus_mb:,.0f} "
                  f"MB corpus ({memory.embedded:,} chunks in {memory.elapsed_s:.0f} s, "
                  f"{memory.chunks_per_s:,.0f} chunks/s, {memory.failed} failed)", "MB",
                  memory.peak_mb, MEMORY_GOAL_MB, "", higher_is_better=False,
                  goal=f"< {MEMORY_GOAL_MB:g} MB for a 1 GB corpus", peer_is_goal=True,
                  notes={"corpus_mb": memory.corpus_mb, "elapsed_s": memory.elapsed_s,
                         "embedded_chunks": memory.embedded, "failed_chunks": memory.failed})


def cpu_figure(profile: str, found: bench_corpus.Comparison) -> Figure:
    label = "LM Studio-like timing" if profile == "lmstudio" else "stress timing"
    return Figure("corpus", f"CPU per chunk, {label}: producer + worker", "ms",
                  found.pool_cpu_ms, found.direct_cpu_ms,
                  "direct SDK embed() process (CPU times from /proc, same rounds)",
                  higher_is_better=False, notes={"profile": profile})


def figure(profile: str, corpus_mb: float, found: bench_corpus.Comparison) -> Figure:
    timing = bench_corpus.PROFILES[profile]
    label = ("LM Studio-like timing (2 ms + 16k tokens/s per slot)" if profile == "lmstudio"
             else "stress timing (2 ms per call)")
    return Figure("corpus", f"embed_corpus, {corpus_mb:g} MB ({found.chunks} chunks), {label}",
                  "chunks/s", statistics.median(found.pool), statistics.median(found.direct),
                  f"direct SDK embed(), {found.threads} threads (the fastest of {THREADS}, "
                  f"picked before the rounds) (ratio: median of "
                  f"{len(found.pool)} alternating rounds; pool {bench_corpus.spread(found.pool)}"
                  f", direct {bench_corpus.spread(found.direct)}; CPU/chunk pool "
                  f"{found.pool_cpu_ms:.2f} ms, direct {found.direct_cpu_ms:.2f} ms)",
                  goal=GOALS[profile],
                  notes={"profile": profile, "what": WHAT[profile], "timing": timing,
                         "tokens": found.tokens, "pool": found.pool, "direct": found.direct,
                         "direct_threads": found.threads},
                  paired_ratio=found.ratio)
