"""Chunking: exact spans, token limits, boundaries, overlap, few count calls."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence

import pytest

from producers.corpus._chunk import Chunker, ChunkSpec
from producers.corpus._reader import split_paragraphs

TOKEN_RE = re.compile(r"\w+|[^\w\s]")


class WordCounter:
    """A deterministic tokenizer: words and punctuation (like the simulator's)."""

    def __init__(self) -> None:
        self.calls = 0
        self.texts = 0

    def count_many(self, texts: Sequence[str]) -> list[int]:
        self.calls += 1
        self.texts += len(texts)
        return [len(TOKEN_RE.findall(t)) for t in texts]


def chunks_of(text: str, limit: int, overlap: int = 0, context: int | None = None,
              exact: bool = True):
    counter = WordCounter()
    chunker = Chunker(counter, ChunkSpec(limit, overlap), context, exact=exact)
    return list(chunker.chunks("doc", split_paragraphs(text))), counter


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "calibrated"])
def test_spans_are_exact_and_under_the_limit(exact: bool) -> None:
    text = "Título ünïcode. Second sentence here!\n\n" + "Long paragraph. " * 80 + "\n\nEnd.\n"
    chunks, _ = chunks_of(text, 30, exact=exact)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        true_count = len(TOKEN_RE.findall(chunk.text))
        assert true_count <= 30
        assert chunk.tokens == true_count if exact else chunk.tokens >= true_count
    covered = "".join(c.text for c in chunks)
    assert covered.replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")


def test_short_paragraphs_pack_and_split_on_paragraph_boundaries() -> None:
    text = "One two three.\n\nFour five six.\n\nSeven eight nine.\n"
    chunks, _ = chunks_of(text, 8)
    assert [c.text for c in chunks] == ["One two three.\n\nFour five six.", "Seven eight nine."]


def test_sentence_boundaries_inside_a_long_paragraph() -> None:
    text = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda mu."
    chunks, _ = chunks_of(text, 9)
    assert all(c.text.endswith(".") for c in chunks)
    assert chunks[0].text == "Alpha beta gamma. Delta epsilon zeta."


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "calibrated"])
def test_never_over_the_context_even_when_chunk_tokens_is_larger(exact: bool) -> None:
    text = " ".join(f"w{i}" for i in range(500))
    chunks, _ = chunks_of(text, 10_000, context=64, exact=exact)
    assert len(chunks) > 1
    assert max(c.tokens for c in chunks) <= 64


def test_overlap_repeats_trailing_sentences() -> None:
    text = "A a. B b. C c. D d. E e. F f."
    chunks, _ = chunks_of(text, 9, overlap=3)
    assert len(chunks) >= 2
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        assert nxt.start < prev.end  # the next chunk starts inside the previous one


def test_empty_and_whitespace_documents_have_no_chunks() -> None:
    assert chunks_of("", 10)[0] == []
    assert chunks_of("\n\n   \n", 10)[0] == []


def test_counts_go_out_in_windows_not_one_call_per_sentence() -> None:
    text = "\n\n".join(f"Sentence {i} one. Sentence {i} two." for i in range(300))
    chunks, counter = chunks_of(text, 40)
    assert len(chunks) > 20
    assert counter.calls < len(chunks) / 2


def test_bad_spec() -> None:
    with pytest.raises(ValueError, match="overlap"):
        ChunkSpec(10, 10)


class SkewedCounter(WordCounter):
    """A tokenizer that makes twice the tokens the local estimate expects."""

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [2 * n for n in super().count_many(texts)]


def test_calibrated_mode_scales_estimates_with_one_count_per_window() -> None:
    text = "\n\n".join(f"Sentence {i} one. Sentence {i} two." for i in range(300))
    counter = SkewedCounter()
    chunks = list(Chunker(counter, ChunkSpec(40, 0), 2048).chunks("d", split_paragraphs(text)))
    assert counter.calls <= 300 // 256 + 1  # one exact count per window of 256 paragraphs
    truth = [2 * len(TOKEN_RE.findall(c.text)) for c in chunks]
    assert max(truth) <= 40 and min(truth) > 20  # the doubled counts were learnt


class RecordingCounter(WordCounter):
    """Counts like `WordCounter`, but a paragraph marked "code" makes three times the tokens
    the local estimate expects (code and prose tokenize differently); keeps what it counted."""

    def __init__(self) -> None:
        super().__init__()
        self.counted: list[str] = []

    def count_many(self, texts: Sequence[str]) -> list[int]:
        self.counted += texts
        super().count_many(texts)
        return [sum(len(TOKEN_RE.findall(p)) * (3 if p.startswith("code") else 1)
                    for p in text.split("\n\n")) for text in texts]


def test_calibrated_mode_counts_a_sample_of_each_window_not_all_of_it() -> None:
    """Prose and code paragraphs in turn: a sample of ~CALIBRATION_TOKENS per window learns
    the window's mixed ratio (a draw of every other paragraph would see only one kind)."""
    paragraphs = [f"{'code' if i % 2 else 'prose'} {i} " + "alpha beta gamma. " * 8
                  for i in range(2000)]
    counter = RecordingCounter()
    chunker = Chunker(counter, ChunkSpec(400, 0), 4096)
    chunks = list(chunker.chunks("d", split_paragraphs("\n\n".join(paragraphs))))
    corpus_tokens = sum(len(TOKEN_RE.findall(p)) for p in paragraphs)
    counted = sum(len(TOKEN_RE.findall(t)) for t in counter.counted)
    assert counter.calls <= 2000 // 256 + 1
    assert counted < corpus_tokens / 4  # ~512 of each window's ~7,000
    truth = [counter.count_many([c.text])[0] for c in chunks[:-1]]  # the last one is short
    assert 0.8 * 400 < statistics.mean(truth) <= 1.1 * 400  # the mix (2x) was learnt
    again = list(Chunker(RecordingCounter(), ChunkSpec(400, 0), 4096).chunks(
        "d", split_paragraphs("\n\n".join(paragraphs))))
    assert again == chunks  # the same sample every time: a resumed run plans the same chunks


def test_calibrated_mode_counts_chunks_near_the_context_exactly() -> None:
    counter = SkewedCounter()
    text = " ".join(f"w{i}" for i in range(400))
    chunker = Chunker(counter, ChunkSpec(10_000, 0), 100)
    chunks = list(chunker.chunks("d", split_paragraphs(text)))
    assert all(2 * len(TOKEN_RE.findall(c.text)) <= 100 for c in chunks)


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "calibrated"])
def test_chunks_leave_room_for_the_special_tokens_the_engine_adds(exact: bool) -> None:
    """countTokens leaves out [CLS]/[SEP] (BOS/EOS); LM Studio embeds an input over the
    context with them truncated: a chunk fills the context less those two, at most."""
    text = " ".join(f"w{i}" for i in range(1000)) + "\n\n" + "one two three. " * 300
    chunks, _ = chunks_of(text, 10_000, context=100, exact=exact)
    sizes = [len(TOKEN_RE.findall(c.text)) for c in chunks]
    assert max(sizes) <= 98 < max(sizes) + 5  # full, but not over


def test_calibrated_chunks_near_the_context_are_counted_exactly_for_the_workers() -> None:
    """Their UTF-8 bytes exceed the context: a worker's local bound would not clear them."""
    text = "\n\n".join(f"Paragraph {i} has a few plain words in it." for i in range(200))
    chunks, counter = chunks_of(text, 100, context=300, exact=False)
    long_ones = [c for c in chunks if len(c.text.encode()) > 300 - 64]
    assert long_ones and all(c.counted for c in long_ones)
    assert all(c.tokens == len(TOKEN_RE.findall(c.text)) for c in long_ones)
    assert not any(c.counted for c in chunks if c not in long_ones)
    assert counter.calls < len(chunks)  # batched, not one call per chunk


def test_counts_sent_ahead_give_the_same_chunks_as_one_by_one() -> None:
    """A counter with `submit` (requests in flight while the chunker works, answered out of
    order) changes nothing."""
    import random
    import time
    from concurrent.futures import Future, ThreadPoolExecutor

    pool = ThreadPoolExecutor(4)
    delays = random.Random(3)

    class SubmittingCounter(WordCounter):
        def submit(self, texts: Sequence[str]) -> Future[list[int]]:
            delay_s = delays.random() / 500

            def late() -> list[int]:
                time.sleep(delay_s)
                return self.count_many(texts)

            return pool.submit(late)

    text = "\n\n".join(f"Part {i}. " + "word " * (i % 37) for i in range(400))
    for exact in (True, False):
        plain = list(Chunker(WordCounter(), ChunkSpec(40, 8), 200, exact=exact)
                     .chunks("d", split_paragraphs(text)))
        ahead = list(Chunker(SubmittingCounter(), ChunkSpec(40, 8), 200, exact=exact)
                     .chunks("d", split_paragraphs(text)))
        assert plain == ahead and len(plain) > 20
    pool.shutdown()
