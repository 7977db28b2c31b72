"""Token-aware chunking on paragraph and sentence boundaries.

Token counts come from a `TokenCounter` (the embedding model's tokenizer through LM Studio
in production), spent so that there is never a round trip per sentence. Two modes:

* calibrated (default, fast): a window of up to 64 paragraphs is counted exactly in ONE
  call; each paragraph's (and sentence's) count is a local estimate (words and
  punctuation) scaled by that window's exact/estimate ratio. Approximation: a chunk's count
  can differ from its estimate by a few percent, so `chunk_tokens` is a target. The hard
  limit is the model's context: a chunk whose estimate is above 3/4 of the context is
  counted exactly and split if over, and every worker refuses a text over the context
  (ContextOverflowError) before embedding it, counting it exactly only when its local
  upper bound exceeds the context (`EmbeddingJob.exact_token_counts=False`, one RPC per
  text). The `tokens` column (and the summary, labelled "estimated") holds these
  calibrated estimates.
* exact mode also sets `exact_token_counts=True`: the exact count of each chunk comes
  back with its vector (the `tokens` column).
* exact: every paragraph is counted (concurrently, cached), over-long paragraphs are
  split into sentences (counted), and every chunk made of more than one piece is counted
  exactly; a chunk over the limit is split at its middle piece and checked again. No
  chunk exceeds min(chunk_tokens, context). Costs about one call per paragraph.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

_SENTENCE_RE = re.compile(r".*?(?:[.!?。！？]+[\"')\]]*\s+|\n|$)", re.S)
_WINDOW_BLOCKS = 64
_ESTIMATE_RE = re.compile(r"\w+|[^\w\s]")
VERIFY_ABOVE_CONTEXT = 0.75  # calibrated mode: chunks estimated above this are counted


class TokenCounter(Protocol):
    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Token counts of `texts`, in order."""
        ...


@dataclass(frozen=True)
class Unit:
    start: int  # character offset of `raw` in the document
    raw: str  # raw text (with trailing whitespace); units of a document are contiguous
    tokens: int  # exact count of raw.strip()


@dataclass(frozen=True)
class Chunk:
    source: str
    index: int
    start: int
    end: int
    text: str
    tokens: int


@dataclass(frozen=True)
class ChunkSpec:
    chunk_tokens: int = 512
    overlap_tokens: int = 0

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1:
            raise ValueError("chunk_tokens must be at least 1")
        if not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise ValueError("overlap must be >= 0 and smaller than chunk_tokens")


def estimate_tokens(text: str) -> int:
    """Local estimate: words and punctuation, long words counted as several pieces."""
    return sum(1 + len(piece) // 8 for piece in _ESTIMATE_RE.findall(text))


class Chunker:
    def __init__(self, counter: TokenCounter, spec: ChunkSpec, context_tokens: int | None = None,
                 *, exact: bool = False):
        self.counter = counter
        self.context = context_tokens
        self.limit = min(spec.chunk_tokens, context_tokens or spec.chunk_tokens)
        self.overlap = min(spec.overlap_tokens, self.limit - 1)
        self.exact = exact
        self._ratio = 1.0

    def chunks(self, source: str, blocks: Iterable[str]) -> Iterator[Chunk]:
        """The chunks of one document, in order, with exact character spans."""
        for index, (start, text, tokens) in enumerate(self._spans(self._units(blocks))):
            yield Chunk(source, index, start, start + len(text), text, tokens)

    # -- units -----------------------------------------------------------------------

    def _units(self, blocks: Iterable[str]) -> Iterator[Unit]:
        offset = 0
        window: list[tuple[int, str]] = []
        for block in blocks:
            window.append((offset, block))
            offset += len(block)
            if len(window) >= _WINDOW_BLOCKS:
                yield from self._window_units(window)
                window = []
        yield from self._window_units(window)

    def _window_units(self, window: list[tuple[int, str]]) -> Iterator[Unit]:
        if not self.exact:
            self._calibrate("".join(raw for _, raw in window))
        counts = self._count([raw for _, raw in window])
        for (start, raw), tokens in zip(window, counts, strict=True):
            if tokens <= self.limit:
                yield Unit(start, raw, tokens)
            else:
                yield from self._split(start, _sentences(raw))

    def _split(self, start: int, pieces: list[str]) -> Iterator[Unit]:
        counts = self._count(pieces)
        for piece, tokens in zip(pieces, counts, strict=True):
            if tokens <= self.limit or len(piece.strip()) <= 1:
                yield Unit(start, piece, tokens)
            else:
                yield from self._split(start, _parts(piece, -(-tokens * 5 // (self.limit * 4))))
            start += len(piece)

    def _calibrate(self, text: str) -> None:
        """One exact count for the whole window sets the estimate's scale."""
        text = text.strip()
        estimate = estimate_tokens(text)
        if estimate:
            (exact,) = self.counter.count_many([text])
            self._ratio = max(exact / estimate, 0.1)

    def _count(self, texts: list[str]) -> list[int]:
        if not self.exact:
            return [math.ceil(estimate_tokens(text) * self._ratio) for text in texts]
        return self._count_exact(texts)

    def _count_exact(self, texts: list[str]) -> list[int]:
        stripped = [text.strip() for text in texts]
        wanted = [text for text in stripped if text]
        counts = iter(self.counter.count_many(wanted) if wanted else [])
        return [next(counts) if text else 0 for text in stripped]

    # -- packing -----------------------------------------------------------------------

    def _spans(self, units: Iterator[Unit]) -> Iterator[tuple[int, str, int]]:
        """Greedy packing of units into (start, text, tokens) spans, checked exactly."""
        pending: list[list[Unit]] = []
        current: list[Unit] = []
        total = 0
        for unit in units:
            if current and total + unit.tokens > self.limit:
                pending.append(current)
                current = self._overlap_tail(current)
                total = sum(u.tokens for u in current)
                if total + unit.tokens > self.limit:
                    current, total = [], 0
            current.append(unit)
            total += unit.tokens
            if len(pending) >= _WINDOW_BLOCKS:
                yield from self._checked(pending)
                pending = []
        if current:
            pending.append(current)
        yield from self._checked(pending)

    def _overlap_tail(self, units: list[Unit]) -> list[Unit]:
        tail: list[Unit] = []
        total = 0
        for unit in reversed(units[1:]):  # never the whole chunk: always make progress
            if total + unit.tokens > self.overlap:
                break
            tail.insert(0, unit)
            total += unit.tokens
        return tail

    def _checked(self, groups: list[list[Unit]]) -> Iterator[tuple[int, str, int]]:
        groups = [g for g in groups if any(u.raw.strip() for u in g)]
        check = [i for i, g in enumerate(groups) if self._needs_count(g)]
        found = self._count_exact([_joined(groups[i]) for i in check])
        exact = dict(zip(check, found, strict=True))
        bound = self.limit if self.exact else (self.context or self.limit)
        for i, group in enumerate(groups):
            tokens = exact.get(i, sum(u.tokens for u in group))
            if tokens <= bound:
                yield _span(group, tokens)
            elif len(group) == 1:
                raise ValueError(f"cannot split {group[0].raw[:20]!r} under {self.limit} tokens")
            else:
                middle = len(group) // 2
                yield from self._checked([group[:middle], group[middle:]])


    def _needs_count(self, group: list[Unit]) -> bool:
        if self.exact:
            return len(group) > 1
        estimate = sum(u.tokens for u in group)
        return self.context is not None and estimate > VERIFY_ABOVE_CONTEXT * self.context


def _joined(units: list[Unit]) -> str:
    return "".join(u.raw for u in units)


def _span(units: list[Unit], tokens: int) -> tuple[int, str, int]:
    raw = _joined(units)
    lead = len(raw) - len(raw.lstrip())
    return units[0].start + lead, raw.strip(), tokens


def _sentences(text: str) -> list[str]:
    return [m.group(0) for m in _SENTENCE_RE.finditer(text) if m.group(0)]


def _parts(text: str, count: int) -> list[str]:
    """`text` cut into about `count` (>= 2) near-equal pieces, at spaces where there are any."""
    count = max(2, min(count, len(text)))
    parts: list[str] = []
    start = 0
    for k in range(1, count):
        target = len(text) * k // count
        cut = text.rfind(" ", start + 1, target + 1) + 1
        if cut <= start:
            cut = target
        if cut > start:
            parts.append(text[start:cut])
            start = cut
    parts.append(text[start:])
    return [part for part in parts if part]
