"""Resume state, part files and the deterministic merge."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from producers.corpus._chunk import Chunk
from producers.corpus._state import (
    RunState,
    StateExistsError,
    StateMismatchError,
    signature,
    state_dir_for,
)
from producers.corpus._writer import OrderedOutput, merge, read_part, rows_table, write_part


def items(n: int, offset: int = 0) -> list[tuple[str, str, Chunk]]:
    return [(f"id{i}", f"sha{i}", Chunk("doc.txt", i, i * 10, i * 10 + 5, f"text {i}", 2))
            for i in range(offset, offset + n)]


def test_resume_needs_the_flag_and_the_same_parameters(tmp_path: Path) -> None:
    state = RunState(state_dir_for(tmp_path / "out.parquet"))
    assert state.open({"model": "m"}, resume=False, restart=False) is False
    with pytest.raises(StateExistsError, match="--resume"):
        state.open({"model": "m"}, resume=False, restart=False)
    with pytest.raises(StateMismatchError, match="model: 'm' -> 'n'"):
        state.open({"model": "n"}, resume=True, restart=False)
    assert state.open({"model": "m"}, resume=True, restart=False) is True
    assert state.open({"model": "n"}, resume=False, restart=True) is False


def test_parts_merge_in_the_given_order(tmp_path: Path) -> None:
    state = RunState(tmp_path / "s")
    state.parts.mkdir(parents=True)
    first, second = items(2), items(3, offset=2)
    paths = [state.part(k, signature([(i, s) for i, s, _ in part]))
             for k, part in enumerate([first, second])]
    write_part(paths[1], rows_table(second, "m", [[1.0, 2.0, 3.0]] * 3))
    write_part(paths[0], rows_table(first, "m", [[0.5, 0.25, 0.0]] * 2))
    assert not list(state.parts.glob("*.tmp"))
    assert read_part(paths[0]).num_rows == 2
    out = tmp_path / "out.parquet"
    assert merge(paths, out, "parquet") == 5
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == ["id0", "id1", "id2", "id3", "id4"]
    vector_type = table.schema.field("vector").type
    assert vector_type.list_size == 3 and str(vector_type.value_type) == "float"
    jsonl = tmp_path / "out.jsonl"
    merge(paths, jsonl, "jsonl")
    first_row = json.loads(jsonl.read_text().splitlines()[0])
    assert first_row["vector"] == [0.5, 0.25, 0.0] and first_row["text"] == "text 0"


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_parts_reported_out_of_order_are_written_in_job_order(tmp_path: Path, fmt: str) -> None:
    state = RunState(tmp_path / "s")
    state.parts.mkdir(parents=True)
    paths = []
    for k in range(4):
        path = state.part(k, "x")
        write_part(path, rows_table(items(2, offset=2 * k), "m", [[float(k)] * 3] * 2))
        paths.append(path)
    out = tmp_path / f"out.{fmt}"
    output = OrderedOutput(out, fmt)
    for k in (3, 1, 0):
        output.ready(k, paths[k])
    output.ready(2, None)  # job 2 failed for good: nothing to write, the rest goes on
    assert not out.exists()  # written to <out>.tmp until closed
    assert output.close() == 6 and not out.with_name(out.name + ".tmp").exists()
    ids = (pq.read_table(out).column("id").to_pylist() if fmt == "parquet"
           else [json.loads(line)["id"] for line in out.read_text().splitlines()])
    assert ids == ["id0", "id1", "id2", "id3", "id6", "id7"]


def test_an_aborted_output_leaves_no_file(tmp_path: Path) -> None:
    state = RunState(tmp_path / "s")
    state.parts.mkdir(parents=True)
    write_part(state.part(0, "x"), rows_table(items(1), "m", [[1.0]]))
    out = tmp_path / "out.parquet"
    output = OrderedOutput(out, "parquet")
    output.ready(0, state.part(0, "x"))
    output.abort()
    assert not out.exists() and not list(tmp_path.glob("out.parquet*"))


def test_signature_changes_with_the_chunks() -> None:
    assert signature([("a", "x")]) != signature([("a", "y")])
    assert signature([("a", "x")]) == signature([("a", "x")])
