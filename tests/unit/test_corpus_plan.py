"""Planning: deterministic chunk ids, duplicates recorded, jobs sized by a token budget."""

from __future__ import annotations

import io
import json
from pathlib import Path

from producers.corpus._chunk import Chunker, ChunkSpec
from producers.corpus._discover import discover
from producers.corpus._plan import JobPlan, Planner
from tests.unit.test_corpus_chunk import WordCounter


def plan(root: Path, job_tokens: int = 20, max_texts: int = 100) -> tuple[list[JobPlan], Planner]:
    dup = io.StringIO()
    planner = Planner(Chunker(WordCounter(), ChunkSpec(5, 0), exact=True), job_tokens=job_tokens,
                      job_max_texts=max_texts, text_field="text", duplicates=dup)
    return list(planner.jobs(discover([root]))), planner


def test_duplicates_are_skipped_and_recorded(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Same words here.\n\nOnly in a.\n")
    (tmp_path / "b.txt").write_text("Same words here.\n\nOnly in b.\n")
    (tmp_path / "c.txt").write_text("")
    jobs, planner = plan(tmp_path)
    texts = [chunk.text for job in jobs for _, _, chunk in job.items]
    assert texts == ["Same words here.", "Only in a.", "Only in b."]
    assert planner.stats.duplicates == 1 and planner.stats.chunks == 4
    assert planner.stats.documents == 3 and planner.stats.finished
    (row,) = [json.loads(line) for line in planner.duplicates.getvalue().splitlines()]  # type: ignore[attr-defined]
    assert row["source"].endswith("b.txt") and row["chunk_index"] == 0


def test_jobs_respect_the_token_budget_and_text_cap(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("\n\n".join(f"Para {i} has five." for i in range(20)))
    jobs, _ = plan(tmp_path, job_tokens=12)
    assert [job.index for job in jobs] == list(range(len(jobs)))
    assert all(job.tokens <= 12 for job in jobs)
    capped, _ = plan(tmp_path, job_tokens=10_000, max_texts=3)
    assert max(len(job.items) for job in capped) == 3


def test_plans_are_deterministic(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("\n\n".join(f"Para {i} here." for i in range(30)))
    first, _ = plan(tmp_path)
    second, _ = plan(tmp_path)
    assert [[cid for cid, _, _ in j.items] for j in first] == \
           [[cid for cid, _, _ in j.items] for j in second]
