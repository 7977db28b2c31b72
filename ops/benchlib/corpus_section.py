"""Corpus embedding throughput: `lmq embed-corpus` (the real CLI, through the pool) vs
direct SDK `embed()` calls on the same chunks with the same number of requests in flight.

Each generated file is shorter than one chunk, so the corpus is exactly one chunk per file
and the peer embeds the same texts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ops.benchlib.figure import Figure
from ops.benchlib.stack import EMBED, stack
from producers.local_pool import local_pool

IN_FLIGHT = 8
WORDS = ["alpha", "beta", "gamma", "delta", "river", "mountain", "queue", "worker", "vector", "token", "model", "cache"]


def write_corpus(folder: Path, files: int) -> list[str]:
    texts = []
    for i in range(files):
        text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(40)) + f" document {i}."
        (folder / f"doc{i:05d}.txt").write_text(text)
        texts.append(text)
    return texts


def direct(host: str, texts: list[str]) -> float:
    import lmstudio as lms

    with lms.Client(host) as client:
        model = client.embedding.model(EMBED)
        model.embed("warm up")
        started = time.perf_counter()
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            list(pool.map(model.embed, texts))
        return len(texts) / (time.perf_counter() - started)


def through_cli(env: dict[str, str], folder: Path) -> float:
    out = folder.parent / "corpus.parquet"
    started = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lmq"), "embed-corpus", str(folder), "-m", EMBED,
         "-o", str(out), "--no-progress", "--json", "--max-in-flight", str(IN_FLIGHT)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"lmq embed-corpus failed: {proc.stderr[-2000:]}")
    import pyarrow.parquet as pq

    rows = pq.read_table(out).num_rows
    return rows / elapsed


def measure(files: int, say: Any) -> list[Figure]:
    say(f"corpus embedding: {files} one-chunk documents")
    with stack({"embedding_latency_s": 0.002}) as parts, \
            tempfile.TemporaryDirectory(prefix="lmq-bench-corpus-") as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        texts = write_corpus(folder, files)
        peer = direct(parts.host, texts)
        with local_pool(parts.redis_url, parts.host, [EMBED]) as pool:
            pooled = through_cli(pool.env, folder)
    return [Figure("corpus", f"embed-corpus, {files} chunks (incl. CLI start, Parquet)",
                   "chunks/s", pooled, peer, f"direct SDK embed(), {IN_FLIGHT} in flight")]
