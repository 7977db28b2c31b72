"""Batch-embed a document corpus through the pool, and search the result.

    from producers.corpus import embed_corpus, search
    summary = embed_corpus(["docs/"], model="text-embedding-nomic-embed-text-v1.5",
                           out="corpus.parquet")
    for hit in search("corpus.parquet", "how do I cancel a job", model=..., k=5): ...
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from producers.corpus._chunk import Chunk, Chunker, ChunkSpec, TokenCounter
from producers.corpus._run import CorpusOptions, CorpusSummary, run_corpus
from producers.corpus._search import CorpusFileError, Hit, nearest
from producers.corpus._state import StateExistsError, StateMismatchError
from workers.settings import Settings, get_settings

__all__ = [
    "Chunk", "ChunkSpec", "Chunker", "CorpusFileError", "CorpusOptions", "CorpusSummary", "Hit",
    "StateExistsError", "StateMismatchError", "TokenCounter", "embed_corpus", "search",
]


def embed_corpus(paths: Sequence[str | os.PathLike[str]], *, model: str, out: str | Path,
                 settings: Settings | None = None, queue: Any = None,
                 counter: TokenCounter | None = None, **options: Any) -> CorpusSummary:
    """Embed every document under `paths` into `out` (Parquet or JSONL); see CorpusOptions."""
    from producers.job_queue import JobQueue

    settings = settings or get_settings()
    opts = CorpusOptions(model=model, out=Path(out), **options)
    own_queue = queue is None
    queue = queue or JobQueue(settings)
    own_counter = counter is None
    if counter is None:
        from producers.corpus._token import LMStudioTokenCounter

        counter = LMStudioTokenCounter(settings.lmstudio_host, model)
    try:
        context = counter.context_length() if hasattr(counter, "context_length") else None
        return run_corpus([str(p) for p in paths], opts, queue, counter, context)
    finally:
        if own_counter:
            counter.close()  # type: ignore[attr-defined]
        if own_queue:
            queue.close()


def search(path: str | Path, query: str, *, model: str, k: int = 5,
           settings: Settings | None = None, timeout_s: float = 60.0) -> list[Hit]:
    """Embed `query` through the pool and return the `k` nearest chunks (cosine)."""
    from producers.job_queue import JobQueue

    with JobQueue(settings or get_settings()) as queue:
        result = queue.embed(model, [query]).result(timeout=timeout_s)
    return nearest(Path(path), result.vectors[0], k)
