"""Corpus embedding throughput, reusing `ops/bench_corpus.py`: `embed_corpus` through the
pool (chunking included) vs the best direct-SDK `embed()` baseline on the same chunk texts
(one client, N threads), measured in the same run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ops import bench_corpus
from ops.benchlib.figure import Figure
from ops.benchlib.stack import EMBED, stack
from producers.local_pool import local_pool

THREADS = [4, 8, 16]


def measure(corpus_mb: float, say: Any) -> list[Figure]:
    import pyarrow.parquet as pq

    say(f"corpus embedding: a {corpus_mb} MB corpus")
    with stack(bench_corpus.SIM_CONFIG["timing"]) as parts, \
            tempfile.TemporaryDirectory(prefix="lmq-bench-corpus-") as tmp:
        work = Path(tmp)
        corpus = bench_corpus.generate_corpus(work / "docs", corpus_mb)
        out = work / "corpus.parquet"
        with local_pool(parts.redis_url, parts.host, [EMBED]) as pool:
            elapsed, summary = bench_corpus.pool_run(corpus, out, pool.settings,
                                                     chunk_tokens=256, overlap_tokens=0,
                                                     max_in_flight=8, job_tokens=8192)
        texts = pq.read_table(out, columns=["text"]).column("text").to_pylist()
        direct, threads = bench_corpus.direct_baseline(parts.host, texts, THREADS)
    return [Figure("corpus", f"embed_corpus, {corpus_mb} MB ({len(texts)} chunks)",
                   "chunks/s", len(texts) / elapsed, direct,
                   f"direct SDK embed(), best of {THREADS} threads ({threads})",
                   goal=">= 0.9x", notes={"tokens": getattr(summary, "tokens", None)})]
