"""Chunking text whose tokens the local estimate undercounts (issue 23): long lines without
sentence ends, tables, base64, URLs, CJK without spaces. Every chunk must fit, none may be
lost, and the chunker must never raise. The integration test with the real tokenizer is
tests/integration/test_corpus_real.py."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

import pytest

from producers.corpus._chunk import Chunker, ChunkSpec
from producers.corpus._reader import split_paragraphs

_PIECE_RE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]|\w+|[^\w\s]")


def subword_tokens(text: str) -> int:
    """Like a WordPiece tokenizer on hard text: a CJK character is a token, a long word one
    token per 3 characters (the local estimate counts one per 8)."""
    return sum(1 if len(p) <= 3 else -(-len(p) // 3) for p in _PIECE_RE.findall(text))


class SubwordCounter:
    def __init__(self) -> None:
        self.calls = 0

    def count_many(self, texts: Sequence[str]) -> list[int]:
        self.calls += 1
        return [subword_tokens(t) for t in texts]


RST_LIST = "".join(f"        - :ref:`get-started-{i}` :class:`celery.app.task.Task{i}` "
                   f"`link <https://docs.celeryq.dev/en/stable/userguide/page{i}.html>`_ "
                   for i in range(120)) + "\n"
TABLE = "\n".join(f"| row {i} | ``setting_name_{i}`` | a value with words | 0x{i:08x} |"
                  for i in range(200)) + "\n"
BASE64 = base64.b64encode(bytes(range(256)) * 60).decode() + "\n"
URL = "See https://example.com/" + "/".join(f"segment{i}-{'x' * 12}" for i in range(300)) + "\n"
CJK = "日本語の文章を空白なしで長く書きますと句読点もない" * 400 + "\n"
CODE = "```python\n" + "".join(f"    result_{i} = app.send_task('tasks.add', args=[{i}, {i}])\n"
                               for i in range(150)) + "```\n"
PLAIN = "".join(f"Plain paragraph {i} with a few short words in it.\n\n" for i in range(40))
HARD = {"rst_list": RST_LIST, "table": TABLE, "base64": BASE64, "url": URL, "cjk": CJK,
        "code": CODE}


def chunks_of(text: str, limit: int, context: int | None, exact: bool):  # type: ignore[no-untyped-def]
    chunker = Chunker(SubwordCounter(), ChunkSpec(limit, 16), context, exact=exact)
    return list(chunker.chunks("doc", split_paragraphs(text)))


@pytest.mark.parametrize("exact", [False, True], ids=["calibrated", "exact"])
@pytest.mark.parametrize("name", sorted(HARD))
def test_every_chunk_fits_and_covers_the_text(name: str, exact: bool) -> None:
    text = f"{PLAIN}{HARD[name]}\n{PLAIN}"  # plain text around: the window's scale is ~1
    chunks = chunks_of(text, 128, context=128, exact=exact)
    assert len(chunks) > 2
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert subword_tokens(chunk.text) <= 128, (name, chunk.text[:60])
    assert _covered(text, chunks)


def _covered(text: str, chunks) -> bool:  # type: ignore[no-untyped-def]
    """Every non-space character of `text` is inside some chunk."""
    inside = bytearray(len(text))
    for chunk in chunks:
        inside[chunk.start : chunk.end] = b"\x01" * (chunk.end - chunk.start)
    return all(inside[i] or text[i].isspace() for i in range(len(text)))


def test_the_line_that_stopped_the_celery_docs_run_is_cut_at_spaces() -> None:
    """Issue 23: `cannot split '        - :ref:`get ' under 512 tokens`."""
    text = PLAIN + RST_LIST + PLAIN
    chunks = chunks_of(text, 512, context=512, exact=False)
    assert len(chunks) > 1 and all(subword_tokens(c.text) <= 512 for c in chunks)
    assert all(text[c.end : c.end + 1] in (" ", "\n", "") for c in chunks)  # not mid-word


def test_pieces_of_a_cut_line_are_packed_again_not_one_chunk_per_piece() -> None:
    chunks = chunks_of(PLAIN + RST_LIST, 512, context=512, exact=False)
    total = subword_tokens(PLAIN + RST_LIST)
    assert len(chunks) <= 2 * -(-total // 512)


def test_a_character_over_the_limit_is_kept_for_the_worker_to_refuse() -> None:
    """One character cannot be cut: the chunker yields it (the run records it as a failed
    chunk with the worker's reason) instead of stopping the run."""

    class Wide:
        def count_many(self, texts: Sequence[str]) -> list[int]:
            return [10 * len(t) for t in texts]

    chunker = Chunker(Wide(), ChunkSpec(5, 0), 5, exact=True)
    chunks = list(chunker.chunks("doc", ["ab c\n"]))
    assert [c.text for c in chunks] == ["a", "b", "c"]
