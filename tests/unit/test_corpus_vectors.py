"""Vectors as base64 float32 (EmbeddingResult.vectors_base64): worker packing, corpus reading."""

from __future__ import annotations

import pytest

from producers.corpus._chunk import Chunk
from producers.corpus._writer import base64_vectors, float_vectors, rows_table
from workers.contract import EmbeddingJob
from workers.jobs.embedding import float32_base64

VECTORS = [[0.5, -1.25, 3.0], [1e-8, 0.0, -2.5]]


def test_packed_vectors_read_back_as_the_same_float32_column() -> None:
    packed = [float32_base64(v) for v in VECTORS]
    assert base64_vectors(packed, 3).to_pylist() == float_vectors(VECTORS).to_pylist()
    chunks = [(f"id{i}", f"s{i}", Chunk("d.txt", i, 0, 1, f"t{i}", 1)) for i in range(2)]
    table = rows_table(chunks, "m", base64_vectors(packed, 3))
    assert table.schema.field("vector").type.list_size == 3
    assert table.column("vector").to_pylist() == rows_table(chunks, "m", VECTORS).column(
        "vector").to_pylist()


def test_a_wrong_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="dimension 4"):
        base64_vectors([float32_base64(v) for v in VECTORS], 4)


def test_the_contract_keeps_float_vectors_by_default() -> None:
    assert EmbeddingJob(model="m", texts=["a"]).encoding_format == "float"
    with pytest.raises(ValueError):
        EmbeddingJob(model="m", texts=["a"], encoding_format="float16")  # type: ignore[arg-type]
