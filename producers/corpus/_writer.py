"""Row schema, part files (Arrow IPC) and the final Parquet / JSONL output."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from producers.corpus._chunk import Chunk

FORMATS = ("parquet", "jsonl")


def schema(dimension: int) -> pa.Schema:
    return pa.schema([
        ("id", pa.string()),
        ("source", pa.string()),
        ("chunk_index", pa.int32()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("text", pa.string()),
        ("sha256", pa.string()),
        ("tokens", pa.int32()),
        ("model", pa.string()),
        ("vector", pa.list_(pa.float32(), dimension)),
    ])


def rows_table(chunks: Sequence[tuple[str, str, Chunk]], model: str,
               vectors: Sequence[Sequence[float]] | pa.FixedSizeListArray,
               token_counts: Sequence[int] | None = None) -> pa.Table:
    """A table of (id, sha256, chunk) rows with their vectors (and exact token counts)."""
    tokens = list(token_counts) if token_counts else [c.tokens for _, _, c in chunks]
    if not isinstance(vectors, pa.FixedSizeListArray):
        vectors = float_vectors(vectors)
    columns = [
        pa.array([cid for cid, _, _ in chunks], pa.string()),
        pa.array([c.source for _, _, c in chunks], pa.string()),
        pa.array([c.index for _, _, c in chunks], pa.int32()),
        pa.array([c.start for _, _, c in chunks], pa.int64()),
        pa.array([c.end for _, _, c in chunks], pa.int64()),
        pa.array([c.text for _, _, c in chunks], pa.string()),
        pa.array([sha for _, sha, _ in chunks], pa.string()),
        pa.array(tokens, pa.int32()),
        pa.array([model] * len(chunks), pa.string()),
        vectors,
    ]
    return pa.Table.from_arrays(columns, schema=schema(vectors.type.list_size))


def float_vectors(vectors: Sequence[Sequence[float]]) -> pa.FixedSizeListArray:
    flat = pa.array([x for vector in vectors for x in vector], pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, len(vectors[0]))


def base64_vectors(packed: Sequence[str], dimension: int) -> pa.FixedSizeListArray:
    """Vectors from EmbeddingResult.vectors_base64 (little-endian float32), never as floats."""
    raw = b"".join(base64.b64decode(text) for text in packed)
    if len(raw) != 4 * dimension * len(packed):
        raise ValueError(f"{len(raw)} bytes for {len(packed)} vectors of dimension {dimension}")
    flat = pa.array(np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=False))
    return pa.FixedSizeListArray.from_arrays(flat, dimension)


def write_part(path: Path, table: pa.Table) -> None:
    """Write atomically: a part file either exists complete or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def read_part(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def merge(parts: Iterable[Path], out: Path, fmt: str) -> int:
    """Concatenate part files, in the given order, into `out`; returns rows written."""
    tmp = out.with_name(out.name + ".tmp")
    rows = 0
    writer: pq.ParquetWriter | None = None
    with tmp.open("wb") as handle:
        for path in parts:
            table = read_part(path)
            rows += table.num_rows
            if fmt == "jsonl":
                _write_jsonl(handle, table)
                continue
            if writer is None:
                writer = pq.ParquetWriter(handle, table.schema, compression="zstd")
            writer.write_table(table)
        if writer is not None:
            writer.close()
        elif fmt == "parquet":
            pq.write_table(schema(0).empty_table(), handle)
    os.replace(tmp, out)
    return rows


def _write_jsonl(handle: object, table: pa.Table) -> None:
    for batch in table.to_batches(max_chunksize=256):
        for row in batch.to_pylist():
            line = json.dumps(row, ensure_ascii=False) + "\n"
            handle.write(line.encode())  # type: ignore[attr-defined]
