"""Streaming readers: each document comes out as contiguous raw text blocks.

A block is one paragraph plus the blank lines after it, so the blocks of a document
concatenate back to its text exactly and character offsets can be counted as they pass.
Nothing holds a whole file: text is read line by line, HTML fed to the parser in pieces,
JSONL one record at a time, PDF one page at a time. Offsets are in characters of the
decoded text (UTF-8, universal newlines; HTML: the extracted text).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TextIO

from producers.corpus._discover import SourceFile

MAX_BLOCK_CHARS = 16_384  # a paragraph longer than this is cut into several blocks
_READ_CHARS = 8_192
_PARAGRAPH_RE = re.compile(r".*?(?:\n[ \t]*\n\s*|$)", re.S)


@dataclass
class Document:
    source: str  # path, or path#L<line> for a JSONL record
    blocks: Iterator[str]


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


class PdfSupportMissingError(RuntimeError):
    """pypdf is not installed."""


PDF_HINT = "PDF support needs the optional extra: pip install 'lmstudio-queue[pdf]'"


def read_documents(source: SourceFile, text_field: str = "text") -> Iterator[Document | Skipped]:
    path = str(source.path)
    if source.kind == "jsonl":
        yield from _jsonl_documents(source, text_field)
    elif source.kind == "pdf":
        try:
            yield Document(path, _pdf_blocks(source))
        except PdfSupportMissingError:
            yield Skipped(path, PDF_HINT)
    else:
        reader = _html_blocks if source.kind == "html" else _text_blocks
        yield Document(path, _with_file(source, reader))


def split_paragraphs(text: str) -> Iterator[str]:
    """Blocks of an in-memory text (paragraph + trailing blank lines); they rejoin to it."""
    for match in _PARAGRAPH_RE.finditer(text):
        piece = match.group(0)
        if not piece:
            continue
        for start in range(0, len(piece), MAX_BLOCK_CHARS):
            yield piece[start : start + MAX_BLOCK_CHARS]


def _with_file(source: SourceFile, reader: type | object) -> Iterator[str]:
    with source.path.open(encoding="utf-8", errors="replace") as handle:
        yield from reader(handle)  # type: ignore[operator]


def _text_blocks(handle: TextIO) -> Iterator[str]:
    buffer: list[str] = []
    size = 0
    after_blank = False
    while line := handle.readline(_READ_CHARS):
        blank = not line.strip()
        if buffer and after_blank and not blank:
            yield "".join(buffer)
            buffer, size = [], 0
        after_blank = blank
        buffer.append(line)
        size += len(line)
        if size >= MAX_BLOCK_CHARS:
            yield "".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer)


def _jsonl_documents(source: SourceFile, field: str) -> Iterator[Document | Skipped]:
    with source.path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            name = f"{source.path}#L{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Skipped(name, f"not JSON: {exc.msg}")
                continue
            text = record.get(field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                yield Skipped(name, f"no string field {field!r} (choose it with --text-field)")
                continue
            yield Document(name, split_paragraphs(text))


def _pdf_blocks(source: SourceFile) -> Iterator[str]:
    try:
        from pypdf import PdfReader
    except ImportError as exc:
        raise PdfSupportMissingError(PDF_HINT) from exc
    return _pdf_pages(PdfReader(str(source.path)))


def _pdf_pages(reader: object) -> Iterator[str]:
    for page in reader.pages:  # type: ignore[attr-defined]
        text = (page.extract_text() or "").strip()
        if text:
            yield from split_paragraphs(text + "\n\n")


_BLOCK_TEXT = ("p div br li ul ol h1 h2 h3 h4 h5 h6 tr table section article header footer "
               "blockquote pre hr dd dt title nav aside main figure figcaption")
_BLOCK_TAGS = frozenset(_BLOCK_TEXT.split(" "))
_DROP_TAGS = frozenset({"script", "style", "noscript", "template", "head"})
_SPACE_RE = re.compile(r"\s+")


class _TextExtractor(HTMLParser):
    """Visible text of HTML: scripts and styles dropped, block tags become paragraph breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._dropping = 0
        self._at_break = True

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in _DROP_TAGS:
            self._dropping += 1
        elif tag in _BLOCK_TAGS:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP_TAGS:
            self._dropping = max(0, self._dropping - 1)
        elif tag in _BLOCK_TAGS:
            self._break()

    def handle_data(self, data: str) -> None:
        if self._dropping:
            return
        text = _SPACE_RE.sub(" ", data)
        if self._at_break:
            text = text.lstrip()
        if text:
            self.out.append(text)
            self._at_break = False

    def _break(self) -> None:
        if not self._at_break:
            self.out.append("\n\n")
            self._at_break = True

    def take_complete(self, final: bool = False) -> str:
        """Text up to the last paragraph break (all of it when `final`)."""
        text = "".join(self.out)
        cut = len(text) if final else text.rfind("\n\n") + 2 if "\n\n" in text else 0
        if not final and cut == 0 and len(text) >= MAX_BLOCK_CHARS:
            cut = len(text)
        self.out = [text[cut:]] if text[cut:] else []
        return text[:cut]


def _html_blocks(handle: TextIO) -> Iterator[str]:
    parser = _TextExtractor()
    while data := handle.read(_READ_CHARS * 8):
        parser.feed(data)
        yield from split_paragraphs(parser.take_complete())
    parser.close()
    yield from split_paragraphs(parser.take_complete(final=True))
