"""Corpus embedding throughput, reusing `ops/bench_corpus.py`: `embed_corpus` through the
pool (chunking included, its defaults but 256-token chunks) vs the best direct-SDK `embed()`
baseline on the same chunk texts (one client, N threads), in alternating rounds of the same
run; the ratio is the median of the rounds' ratios."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from ops import bench_corpus
from ops.benchlib.figure import Figure
from ops.benchlib.stack import EMBED, stack
from producers.local_pool import local_pool

THREADS = [4, 8, 16]
ROUNDS = 3


def measure(corpus_mb: float, say: Any) -> list[Figure]:
    say(f"corpus embedding: a {corpus_mb} MB corpus, {ROUNDS} rounds")
    with stack(bench_corpus.SIM_CONFIG["timing"]) as parts, \
            tempfile.TemporaryDirectory(prefix="lmq-bench-corpus-") as tmp:
        work = Path(tmp)
        corpus = bench_corpus.generate_corpus(work / "docs", corpus_mb)
        with local_pool(parts.redis_url, parts.host, [EMBED]) as pool:
            found = bench_corpus.compare(corpus, work, pool.settings, parts.host, ROUNDS,
                                         THREADS)
    return [Figure("corpus", f"embed_corpus, {corpus_mb} MB ({found.chunks} chunks)",
                   "chunks/s", statistics.median(found.pool), statistics.median(found.direct),
                   f"direct SDK embed(), best of {THREADS} threads (ratio: median of "
                   f"{ROUNDS} alternating rounds; pool {bench_corpus.spread(found.pool)}, "
                   f"direct {bench_corpus.spread(found.direct)})",
                   goal=">= 0.9x", notes={"tokens": found.tokens, "pool": found.pool,
                                           "direct": found.direct},
                   paired_ratio=found.ratio)]
