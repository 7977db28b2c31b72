"""Token-aware chunking on paragraph and sentence boundaries.

Token counts come from a `TokenCounter` (the embedding model's tokenizer through LM Studio
in production), spent so that there is never a round trip per sentence. Two modes:

* calibrated (default, fast): each window of up to 256 paragraphs has ONE exact count, of
  a sample of its paragraphs drawn across it, about `CALIBRATION_TOKENS` in all (a count
  costs LM Studio's tokenizer, and both ends of the websocket, per byte and per call);
  each paragraph's (and sentence's) count is a local estimate (words and punctuation)
  scaled by that sample's exact/estimate ratio. Approximation: a chunk's count
  can differ from its estimate by a few percent, so `chunk_tokens` is a target. The hard
  limit is the model's context: a chunk whose estimate is above 3/4 of the context is
  counted exactly and split if over, and every worker refuses a text over the context
  (ContextOverflowError) before embedding it, counting it exactly only when its local
  upper bound exceeds the context (`EmbeddingJob.exact_token_counts=False`, one RPC per
  text). The `tokens` column (and the summary, labelled "estimated") holds these
  calibrated estimates. A chunk whose UTF-8 bytes come within `NEAR_CONTEXT_TOKENS` of the
  context is counted exactly too (batched, here): a worker's local bound (bytes) would not
  clear it, and the job carries the count (`EmbeddingJob.token_counts`), so the worker does
  not spend an RPC of its own on it (with 512-token chunks of English and a 2048 context,
  that is every chunk, and the count doubled the worker's cost per text).
* exact mode also sets `exact_token_counts=True`: the exact count of each chunk comes
  back with its vector (the `tokens` column).
* exact: every paragraph is counted (concurrently, cached), over-long paragraphs are
  split into sentences (counted), and every chunk made of more than one piece is counted
  exactly; a chunk over the limit is split at its middle piece and checked again. No
  chunk exceeds min(chunk_tokens, context). Costs about one call per paragraph.

In both modes a single piece found over the limit (its estimate was low: a long line of
markup without a sentence end, a URL, base64, CJK without spaces) is cut further, counted
exactly at each step: at sentences, then at spaces, then anywhere; the pieces are packed
again. The chunker never gives up on a text: only a single character over the limit (a
model whose context is a few tokens) is left as it is, for the worker to refuse and the
run to record as a failed chunk.

"Context" here is the model's loaded context less `EMBEDDING_SPECIAL_TOKENS`: LM Studio's
counts leave out the start/end tokens its engine adds when it embeds, and an input longer
than the context with them is embedded truncated (workers.contract says why and where from).
"""

from __future__ import annotations

import math
import random
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, TypeVar

from workers.contract import EMBEDDING_SPECIAL_TOKENS

_SENTENCE_RE = re.compile(r".*?(?:[.!?。！？]+[\"')\]]*\s+|\n|$)", re.S)
_WINDOW_BLOCKS = 256
_WINDOWS_AHEAD = 4  # windows whose scale counts are in flight while one is chunked
_GROUPS_PER_CHECK = 16  # chunks checked with one batch of exact counts
_CHECKS_AHEAD = 4  # such batches in flight while one is used
T = TypeVar("T")
R = TypeVar("R")
_ESTIMATE_RE = re.compile(r"\w+|[^\w\s]")
_LONG_WORD_RE = re.compile(r"\w{8,}")  # the \w+ pieces of _ESTIMATE_RE that are 8+ long
VERIFY_ABOVE_CONTEXT = 0.75  # calibrated mode: chunks estimated above this are counted
NEAR_CONTEXT_TOKENS = 64  # calibrated mode: and chunks with more UTF-8 bytes than context - this
CALIBRATION_TOKENS = 512  # calibrated mode: estimated tokens of a window's counted sample


Span = tuple[int, str, int, bool]  # (start, text, tokens, tokens counted exactly)


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
    counted: bool = False  # `tokens` is LM Studio's exact count (not an estimate)


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
    """Local estimate: words and punctuation, long words counted as several pieces.

    That is one per piece, plus len // 8 more per word of 8 characters or more (counted
    apart, so that the common short pieces never reach Python code)."""
    extra = sum(len(word) // 8 for word in _LONG_WORD_RE.findall(text))
    return len(_ESTIMATE_RE.findall(text)) + extra


class Chunker:
    def __init__(self, counter: TokenCounter, spec: ChunkSpec, context_tokens: int | None = None,
                 *, exact: bool = False):
        self.counter = counter
        # the room a chunk's own tokens have: the engine adds its special tokens to what
        # countTokens counts, and embeds an input over the context truncated (see contract)
        self.context = (None if context_tokens is None
                        else max(1, context_tokens - EMBEDDING_SPECIAL_TOKENS))
        self.limit = min(spec.chunk_tokens, self.context or spec.chunk_tokens)
        self.overlap = min(spec.overlap_tokens, self.limit - 1)
        self.exact = exact
        self._ratio = 1.0

    def chunks(self, source: str, blocks: Iterable[str]) -> Iterator[Chunk]:
        """The chunks of one document, in order, with exact character spans."""
        for index, (start, text, tokens, counted) in enumerate(
                self._spans(self._units(blocks))):
            yield Chunk(source, index, start, start + len(text), text, tokens,
                        counted or self.exact)

    # -- units -----------------------------------------------------------------------

    def _units(self, blocks: Iterable[str]) -> Iterator[Unit]:
        for window, counts in _ahead(self._counted_windows(blocks), _WINDOWS_AHEAD):
            yield from self._window_units(window, counts)

    def _counted_windows(self, blocks: Iterable[str]
                         ) -> Iterator[tuple[list[tuple[int, str]], Callable[[], list[int]]]]:
        offset = 0
        window: list[tuple[int, str]] = []
        for block in blocks:
            window.append((offset, block))
            offset += len(block)
            if len(window) >= _WINDOW_BLOCKS:
                yield window, self._submit_window([raw for _, raw in window])
                window = []
        yield window, self._submit_window([raw for _, raw in window])

    def _submit_window(self, raws: list[str]) -> Callable[[], list[int]]:
        """Send the window's count(s); the call returned gives each block's count."""
        if self.exact:
            return self._submit_exact(raws)
        estimates = [estimate_tokens(raw) for raw in raws]  # for the scale and each block
        sample = _calibration_sample(estimates)
        text = "".join(raws[i] for i in sample).strip()
        total = sum(estimates[i] for i in sample)
        scale = self._submit([text]) if total and text else None

        def counts() -> list[int]:  # called in window order: the scale is the window's
            if scale is not None:
                self._ratio = max(scale.result()[0] / total, 0.1)
            return [math.ceil(estimate * self._ratio) for estimate in estimates]

        return counts

    def _window_units(self, window: list[tuple[int, str]], counts: list[int]) -> Iterator[Unit]:
        for (start, raw), tokens in zip(window, counts, strict=True):
            if tokens <= self.limit:
                yield Unit(start, raw, tokens)
            else:
                yield from self._split(start, _sentences(raw))

    def _split(self, start: int, pieces: list[str]) -> Iterator[Unit]:
        counts = self._count(pieces)
        for piece, tokens in zip(pieces, counts, strict=True):
            if tokens <= self.limit or not _splittable(piece):
                yield Unit(start, piece, tokens)
            else:
                yield from self._split(start, _parts(piece, -(-tokens * 5 // (self.limit * 4))))
            start += len(piece)

    def _count(self, texts: list[str]) -> list[int]:
        if not self.exact:
            return [math.ceil(estimate_tokens(text) * self._ratio) for text in texts]
        return self._submit_exact(texts)()

    def _submit_exact(self, texts: list[str]) -> Callable[[], list[int]]:
        stripped = [text.strip() for text in texts]
        wanted = [text for text in stripped if text]
        found = self._submit(wanted) if wanted else None

        def counts() -> list[int]:
            numbers = iter(found.result() if found is not None else [])
            return [next(numbers) if text else 0 for text in stripped]

        return counts

    def _submit(self, texts: list[str]) -> Future[list[int]]:
        """The counts of `texts`, on their way (at once from a counter without `submit`)."""
        submit = getattr(self.counter, "submit", None)
        if submit is not None:
            return submit(texts)  # type: ignore[no-any-return]
        done: Future[list[int]] = Future()
        try:
            done.set_result(self.counter.count_many(texts))
        except Exception as exc:  # noqa: BLE001 - raised where the result is read
            done.set_exception(exc)
        return done

    # -- packing -----------------------------------------------------------------------

    def _spans(self, units: Iterator[Unit]) -> Iterator[Span]:
        """Greedy packing of units into (start, text, tokens) spans, checked exactly."""
        for groups, counted in _ahead(self._group_batches(units), _CHECKS_AHEAD):
            yield from self._checked(groups, counted)

    def _group_batches(self, units: Iterator[Unit]
                       ) -> Iterator[tuple[list[list[Unit]], Callable[[], dict[int, int]]]]:
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
            if len(pending) >= _GROUPS_PER_CHECK:
                yield self._submit_check(pending)
                pending = []
        if current:
            pending.append(current)
        yield self._submit_check(pending)

    def _overlap_tail(self, units: list[Unit]) -> list[Unit]:
        tail: list[Unit] = []
        total = 0
        for unit in reversed(units[1:]):  # never the whole chunk: always make progress
            if total + unit.tokens > self.overlap:
                break
            tail.insert(0, unit)
            total += unit.tokens
        return tail

    def _submit_check(self, groups: list[list[Unit]]
                      ) -> tuple[list[list[Unit]], Callable[[], dict[int, int]]]:
        """Send the exact counts these groups need; the call returned gives them by index."""
        groups = [g for g in groups if any(u.raw.strip() for u in g)]
        check = [i for i, g in enumerate(groups) if self._needs_count(g)]
        counts = self._submit_exact([_joined(groups[i]) for i in check])
        return groups, lambda: dict(zip(check, counts(), strict=True))

    def _checked(self, groups: list[list[Unit]], exact: dict[int, int]) -> Iterator[Span]:
        bound = self.limit if self.exact else (self.context or self.limit)
        for i, group in enumerate(groups):
            tokens = exact.get(i, sum(u.tokens for u in group))
            if tokens <= bound or (len(group) == 1 and not _splittable(group[0].raw)):
                # over only when one character is: the worker refuses it, a failed chunk
                yield _span(group, tokens, i in exact)
            elif len(group) == 1:  # its estimate was low (a long line, a URL, CJK): cut it
                fitted = self._fitted(group[0].start, group[0].raw, tokens)
                pieces, counted = self._submit_check(self._packed(fitted))
                yield from self._checked(pieces, counted())
            else:
                middle = len(group) // 2
                halves, counted = self._submit_check([group[:middle], group[middle:]])
                yield from self._checked(halves, counted())

    def _fitted(self, start: int, text: str, tokens: int) -> Iterator[Unit]:
        """`text` cut, counted exactly, until every piece fits the limit: at sentences,
        else at spaces, else anywhere (a URL, base64, CJK without spaces: pieces of about
        `limit` tokens each, whose exact counts decide whether they are cut again)."""
        if tokens <= self.limit or not _splittable(text):
            yield Unit(start, text, tokens)
            return
        pieces = _sentences(text)
        if len(pieces) < 2:
            pieces = _parts(text, -(-tokens * 5 // (self.limit * 4)))
        for piece, count in zip(pieces, self._submit_exact(pieces)(), strict=True):
            yield from self._fitted(start, piece, count)
            start += len(piece)

    def _packed(self, units: Iterable[Unit]) -> list[list[Unit]]:
        """Consecutive units grouped greedily up to the limit (no overlap: one cut unit)."""
        groups: list[list[Unit]] = [[]]
        total = 0
        for unit in units:
            if groups[-1] and total + unit.tokens > self.limit:
                groups.append([])
                total = 0
            groups[-1].append(unit)
            total += unit.tokens
        return groups

    def _needs_count(self, group: list[Unit]) -> bool:
        if self.exact:
            return len(group) > 1
        if self.context is None:
            return False
        estimate = sum(u.tokens for u in group)
        return (estimate > VERIFY_ABOVE_CONTEXT * self.context
                or len(_joined(group).encode()) > self.context - NEAR_CONTEXT_TOKENS)


def _ahead(items: Iterator[tuple[T, Callable[[], R]]], depth: int) -> Iterator[tuple[T, R]]:
    """`items` in order, each with its result, while the next `depth` are on their way.

    Each item comes with the call that waits for its counts, sent when the item was made:
    pulling `depth` items ahead keeps that many count requests in flight, so the chunker
    is not one round trip to LM Studio after another."""
    waiting: deque[tuple[T, Callable[[], R]]] = deque()
    for item in items:
        waiting.append(item)
        if len(waiting) > depth:
            first, result = waiting.popleft()
            yield first, result()
    while waiting:
        first, result = waiting.popleft()
        yield first, result()


def _calibration_sample(estimates: list[int]) -> list[int]:
    """The window's paragraphs to count: about `CALIBRATION_TOKENS` estimated in all (every
    paragraph of a smaller window), drawn at random across it, so that no pattern of the
    text (prose and code in turn, say) lines up with the draw; seeded by the estimates, so
    the same text always gives the same chunks (a resumed run depends on it)."""
    total = sum(estimates)
    wanted = min(len(estimates), math.ceil(len(estimates) * CALIBRATION_TOKENS / max(total, 1)))
    if wanted >= len(estimates):
        return list(range(len(estimates)))
    return sorted(random.Random(total).sample(range(len(estimates)), wanted))


def _joined(units: list[Unit]) -> str:
    return "".join(u.raw for u in units)


def _span(units: list[Unit], tokens: int, counted: bool) -> Span:
    raw = _joined(units)
    lead = len(raw) - len(raw.lstrip())
    return units[0].start + lead, raw.strip(), tokens, counted


def _splittable(text: str) -> bool:
    return len(text.strip()) > 1


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
