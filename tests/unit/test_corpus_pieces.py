"""A split job's pieces: which errors split, what is settled, what --resume reuses."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from producers.corpus._chunk import Chunk
from producers.corpus._pieces import PlanPieces, halves, part_path, per_input, resumed_pieces
from producers.corpus._plan import JobPlan
from producers.corpus._state import RunState
from producers.corpus._writer import OrderedOutput, rows_table, write_part
from workers.error import (
    ContextOverflowError,
    JobCancelledError,
    JobExpiredError,
    JobFailedError,
    LMStudioLostError,
    LMStudioUnavailableError,
    ModelNotAvailableError,
)


def plan(n: int, index: int = 0) -> JobPlan:
    return JobPlan(index, [(f"id{i}", f"sha{i}", Chunk("doc.txt", i, i, i + 1, f"t{i}", 1))
                           for i in range(n)])


def test_only_errors_one_input_can_cause_split_a_job() -> None:
    assert per_input(ContextOverflowError("texts[3] has 900 tokens"))
    assert per_input(JobFailedError("embed: Input length 900 exceeds context length 512"))
    for error in (LMStudioUnavailableError("down"), LMStudioLostError("lost"),
                  ModelNotAvailableError("unloaded"), JobExpiredError("expired"),
                  JobCancelledError("revoked", None), "no result after 300s"):
        assert not per_input(error), error


def test_a_plan_is_complete_when_its_pieces_cover_it_and_its_parts_come_in_item_order(
        tmp_path: Path) -> None:
    pieces = PlanPieces(plan(10))
    assert halves(0, 10) == [(0, 5), (5, 10)] and pieces.gaps() == [(0, 10)]
    pieces.settle(5, 7, tmp_path / "b")
    pieces.settle(0, 5, tmp_path / "a")
    assert not pieces.complete and pieces.gaps() == [(7, 10)]
    pieces.settle(8, 10, tmp_path / "c")
    pieces.settle(7, 8, None)  # failed for good
    assert pieces.complete and pieces.parts() == [tmp_path / n for n in "abc"]


def test_resume_reuses_only_pieces_that_match_their_chunks(tmp_path: Path) -> None:
    state = RunState(tmp_path / "s")
    state.parts.mkdir(parents=True)
    job = plan(8, index=3)
    good = part_path(state, job, 0, 4)
    write_part(good, rows_table(job.items[0:4], "m", [[1.0]] * 4))
    stale = state.piece(3, 4, 6, "0123456789abcdef")  # other chunks: signature differs
    write_part(stale, rows_table(job.items[4:6], "m", [[1.0]] * 2))
    write_part(part_path(state, plan(8, index=4), 0, 4), rows_table(job.items[0:4], "m",
                                                                     [[1.0]] * 4))
    found = resumed_pieces(state, job)
    assert found.parts() == [good] and found.gaps() == [(4, 8)]
    whole = part_path(state, job, 0, 8).name  # the whole plan: the name it always had
    assert whole.startswith("part-00000003-") and "-r" not in whole


def test_ordered_output_writes_a_split_jobs_parts_in_their_place(tmp_path: Path) -> None:
    state = RunState(tmp_path / "s")
    state.parts.mkdir(parents=True)
    job0, job1 = plan(2, 0), JobPlan(1, [(f"id{i}", f"s{i}", Chunk("d", i, 0, 1, "x", 1))
                                         for i in range(2, 6)])
    whole = part_path(state, job0, 0, 2)
    write_part(whole, rows_table(job0.items, "m", [[0.0]] * 2))
    first, last = part_path(state, job1, 0, 1), part_path(state, job1, 2, 4)
    write_part(first, rows_table(job1.items[0:1], "m", [[1.0]]))
    write_part(last, rows_table(job1.items[2:4], "m", [[1.0]] * 2))
    out = tmp_path / "out.parquet"
    output = OrderedOutput(out, "parquet")
    output.ready(1, [first, last])  # item 1 of job 1 failed: nothing written for it
    output.ready(0, whole)
    assert output.close() == 5
    assert pq.read_table(out).column("id").to_pylist() == ["id0", "id1", "id2", "id4", "id5"]
