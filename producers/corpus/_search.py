"""Nearest chunks to a query: stream the file's vectors, keep the top k by cosine."""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BATCH_ROWS = 4096


@dataclass(frozen=True)
class Hit:
    score: float
    id: str
    source: str
    chunk_index: int
    start: int
    end: int
    text: str


class CorpusFileError(ValueError):
    """The file given to search is not a corpus written by `lmq embed-corpus`, or its
    vectors come from a model other than the query's."""


def nearest(path: Path, query: list[float], k: int = 5) -> list[Hit]:
    """The `k` chunks of the corpus file nearest to `query`; CorpusFileError if unreadable."""
    try:
        return _nearest(path, query, k)
    except (pa.ArrowException, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorpusFileError(f"{path} is not a corpus written by `lmq embed-corpus` "
                              f"({type(exc).__name__}: {str(exc)[:120]})") from None


def _nearest(path: Path, query: list[float], k: int) -> list[Hit]:
    q = np.asarray(query, dtype=np.float32)
    q /= max(float(np.linalg.norm(q)), 1e-12)
    best: list[tuple[float, int, Hit]] = []
    seq = 0
    for rows, vectors in _batches(path):
        if vectors.shape[1] != q.shape[0]:
            raise CorpusFileError(
                f"{path} holds {vectors.shape[1]}-dimension vectors, the query's model gives "
                f"{q.shape[0]}: search with the model that embedded it (the `model` column)")
        norms = np.linalg.norm(vectors, axis=1)
        scores = vectors @ q / np.maximum(norms, 1e-12)
        for i in np.argsort(-scores)[:k]:
            seq += 1
            item = (float(scores[i]), -seq, _hit(rows, int(i), float(scores[i])))
            if len(best) < k:
                heapq.heappush(best, item)
            elif item[0] > best[0][0]:
                heapq.heapreplace(best, item)
    return [hit for _, _, hit in sorted(best, key=lambda t: (-t[0], -t[1]))]


def _hit(rows: dict[str, list[Any]], i: int, score: float) -> Hit:
    return Hit(score, str(rows["id"][i]), str(rows["source"][i]), int(rows["chunk_index"][i]),
               int(rows["start"][i]), int(rows["end"][i]), str(rows["text"][i]))


_COLUMNS = ["id", "source", "chunk_index", "start", "end", "text"]


def _batches(path: Path):  # type: ignore[no-untyped-def]
    if path.suffix == ".jsonl":
        yield from _jsonl_batches(path)
        return
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=[*_COLUMNS, "vector"]):
        if batch.num_rows == 0:
            continue
        column = batch.column("vector")
        dim = column.type.list_size
        vectors = column.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
        yield {c: batch.column(c).to_pylist() for c in _COLUMNS}, vectors


def _jsonl_batches(path: Path):  # type: ignore[no-untyped-def]
    rows: dict[str, list[object]] = {c: [] for c in _COLUMNS}
    vectors: list[list[float]] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            for c in _COLUMNS:
                rows[c].append(record[c])
            vectors.append(record["vector"])
            if len(vectors) >= BATCH_ROWS:
                yield rows, np.asarray(vectors, dtype=np.float32)
                rows, vectors = {c: [] for c in _COLUMNS}, []
    if vectors:
        yield rows, np.asarray(vectors, dtype=np.float32)
