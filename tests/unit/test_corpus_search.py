"""Nearest-chunk search over Parquet and JSONL outputs, and the progress reporters."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from producers.corpus._chunk import Chunk
from producers.corpus._progress import Progress
from producers.corpus._search import nearest
from producers.corpus._state import RunState
from producers.corpus._writer import merge, rows_table, write_part


@pytest.fixture(params=["parquet", "jsonl"])
def corpus_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    chunks = [(f"id{i}", f"s{i}", Chunk("d.txt", i, 0, 1, f"t{i}", 1)) for i in range(5)]
    vectors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.7, 0.7, 0.0], [0.0, 0.0, 2.0],
               [-1.0, 0.0, 0.0]]
    state = RunState(tmp_path / "s")
    state.parts.mkdir(parents=True)
    part = state.part(0, "x")
    write_part(part, rows_table(chunks, "m", vectors))
    out = tmp_path / f"out.{request.param}"
    merge([part], out, request.param)
    return out


def test_nearest_orders_by_cosine(corpus_file: Path) -> None:
    hits = nearest(corpus_file, [1.0, 0.1, 0.0], k=3)
    assert [h.id for h in hits] == ["id0", "id2", "id1"]
    assert hits[0].score > hits[1].score > hits[2].score
    assert nearest(corpus_file, [0.0, 0.0, 5.0], k=1)[0].id == "id3"  # norms do not matter


def test_plain_progress_lines_and_tqdm_bar() -> None:
    plain = io.StringIO()
    progress = Progress(1000, stream=plain, bar=False)
    progress.estimate(10, 500, finished=False)
    assert progress.total == 20  # 10 chunks from half the bytes
    progress.advance(5, 100)
    progress.close()
    assert "embedding: 5/20 chunks" in plain.getvalue() and "ETA" in plain.getvalue()
    bar_out = io.StringIO()
    bar = Progress(1000, stream=bar_out, bar=True)
    bar.estimate(10, 1000, finished=True)
    bar.advance(4, 80)
    bar.close()
    assert "4/10" in bar_out.getvalue() and "tok/s" in bar_out.getvalue()


def test_a_file_that_is_not_a_corpus_is_one_clear_error(tmp_path: Path) -> None:
    from producers.corpus import CorpusFileError

    text = tmp_path / "notes.parquet"
    text.write_text("just text\n")
    with pytest.raises(CorpusFileError, match="is not a corpus written by `lmq embed-corpus`"):
        nearest(text, [1.0, 0.0, 0.0])


def test_a_query_from_another_model_is_refused_with_both_dimensions(corpus_file: Path
                                                                   ) -> None:
    from producers.corpus import CorpusFileError

    with pytest.raises(CorpusFileError, match="holds 3-dimension vectors, the query's model "
                                              "gives 4: search with the model that embedded"):
        nearest(corpus_file, [1.0, 0.0, 0.0, 0.0])
