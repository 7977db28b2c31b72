"""Row schema, part files (Arrow IPC) and the final Parquet / JSONL output."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from producers.corpus._chunk import Chunk

FORMATS = ("parquet", "jsonl")
Parts = Path | Sequence[Path] | None  # one job's rows: its part, its pieces' parts, or none
ROW_GROUP_ROWS = 4096  # Parquet row group: ~16 MB of 768-dimension vectors


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
    output = OrderedOutput(out, fmt)
    for index, path in enumerate(parts):
        output.ready(index, path)
    return output.close()


class OrderedOutput:
    """The output file, written while the run goes on: parts in job order as they are ready.

    Jobs finish out of order; part k is written once every part before it was written (or
    its job failed for good: `ready(k, None)`). A job that was split (`_pieces`) reports
    its pieces' parts together, in item order: `ready(k, [part, ...])`. A thread does the
    reading and writing, so the dispatcher never waits on it, and memory holds one row group
    (`ROW_GROUP_ROWS`) being built. Rows go to `<out>.tmp`, renamed to `out` by `close()`;
    `abort()` drops it.
    """

    def __init__(self, out: Path, fmt: str) -> None:
        self.out = out
        self.fmt = fmt
        self.rows = 0
        self._tmp = out.with_name(out.name + ".tmp")
        self._handle = self._tmp.open("wb")
        self._writer: pq.ParquetWriter | None = None
        self._group: list[pa.Table] = []
        self._group_rows = 0
        self._waiting: dict[int, Parts] = {}
        self._next = 0
        self._inbox: queue.Queue[tuple[int, Parts] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lmq-corpus-output",
                                        daemon=True)
        self._thread.start()

    def ready(self, index: int, part: Parts) -> None:
        """Part `index` is complete (None: its job failed; nothing to write for it)."""
        self._raise_error()
        self._inbox.put((index, part))

    def close(self) -> int:
        """Write what is left in job order, finish the file and rename it; rows written."""
        self._stop()
        if self._error is not None:
            self.abort()
            raise self._error
        for index in sorted(self._waiting):  # gaps: parts never reported (nothing to write)
            self._write(self._waiting.pop(index))
        self._flush()
        if self._writer is not None:
            self._writer.close()
        elif self.fmt == "parquet":
            pq.write_table(schema(0).empty_table(), self._handle)
        self._handle.close()
        os.replace(self._tmp, self.out)
        return self.rows

    def abort(self) -> None:
        """Interrupted: no output file (the parts stay for --resume)."""
        if self._thread.is_alive():
            self._stop()
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        self._handle.close()
        self._tmp.unlink(missing_ok=True)

    def _stop(self) -> None:
        self._inbox.put(None)
        self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while (item := self._inbox.get()) is not None:
                self._waiting[item[0]] = item[1]
                while self._next in self._waiting:
                    self._write(self._waiting.pop(self._next))
                    self._next += 1
        except BaseException as exc:  # noqa: BLE001 - raised in the dispatching thread
            self._error = exc

    def _write(self, part: Parts) -> None:
        for path in [part] if isinstance(part, Path) else part or []:
            self._write_part(path)

    def _write_part(self, part: Path) -> None:
        table = read_part(part)
        self.rows += table.num_rows
        if self.fmt == "jsonl":
            _write_jsonl(self._handle, table)
            return
        self._group.append(table)
        self._group_rows += table.num_rows
        if self._group_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._group:
            return
        table = pa.concat_tables(self._group)
        self._group, self._group_rows = [], 0
        if self._writer is None:
            # Dictionaries only where values repeat: tried on the vectors (and ids, texts),
            # they cost two thirds of the write time and make the file larger.
            self._writer = pq.ParquetWriter(self._handle, table.schema, compression="zstd",
                                            use_dictionary=["source", "model"])
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))


def _write_jsonl(handle: object, table: pa.Table) -> None:
    for batch in table.to_batches(max_chunksize=256):
        for row in batch.to_pylist():
            line = json.dumps(row, ensure_ascii=False) + "\n"
            handle.write(line.encode())  # type: ignore[attr-defined]
