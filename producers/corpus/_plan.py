"""Deterministic planning: documents -> chunks -> duplicates skipped -> embedding jobs.

The same corpus and parameters always give the same chunk ids, jobs and order, which is
what lets a resumed run reuse the part files of an interrupted one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from producers.corpus._chunk import Chunk, Chunker
from producers.corpus._discover import SourceFile
from producers.corpus._reader import Document, Skipped, read_documents


@dataclass
class JobPlan:
    index: int
    items: list[tuple[str, str, Chunk]]  # (chunk id, sha256, chunk)

    @property
    def tokens(self) -> int:
        return sum(chunk.tokens for _, _, chunk in self.items)


@dataclass
class PlanStats:
    files: int = 0
    documents: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    chunks: int = 0
    duplicates: int = 0
    duplicate_tokens: int = 0
    bytes_read: int = 0
    finished: bool = False


def chunk_id(source: str, index: int) -> str:
    return hashlib.sha256(f"{source}\x1f{index}".encode()).hexdigest()[:32]


class Planner:
    def __init__(self, chunker: Chunker, *, job_tokens: int, job_max_texts: int,
                 text_field: str, duplicates: TextIO) -> None:
        self.chunker = chunker
        self.job_tokens = job_tokens
        self.job_max_texts = job_max_texts
        self.text_field = text_field
        self.duplicates = duplicates
        self.stats = PlanStats()
        # 96-bit prefixes of the sha256 of every kept chunk: ~100 bytes a chunk, not its text
        self._seen: set[int] = set()

    def jobs(self, sources: Iterable[SourceFile]) -> Iterator[JobPlan]:
        items: list[tuple[str, str, Chunk]] = []
        tokens = 0
        index = 0
        for item in self._unique_chunks(sources):
            if items and (tokens + item[2].tokens > self.job_tokens
                          or len(items) >= self.job_max_texts):
                yield JobPlan(index, items)
                index, items, tokens = index + 1, [], 0
            items.append(item)
            tokens += item[2].tokens
        if items:
            yield JobPlan(index, items)
        self.stats.finished = True

    def _unique_chunks(self, sources: Iterable[SourceFile]) -> Iterator[tuple[str, str, Chunk]]:
        for chunk in self._chunks(sources):
            sha = hashlib.sha256(chunk.text.encode()).hexdigest()
            cid = chunk_id(chunk.source, chunk.index)
            key = int(sha[:24], 16)
            self.stats.chunks += 1
            if key in self._seen:
                self._record_duplicate(cid, sha, chunk)
                continue
            self._seen.add(key)
            yield cid, sha, chunk

    def _chunks(self, sources: Iterable[SourceFile]) -> Iterator[Chunk]:
        for source in sources:
            self.stats.files += 1
            for doc in read_documents(source, self.text_field):
                if isinstance(doc, Skipped):
                    self.stats.skipped.append(doc)
                    continue
                self.stats.documents += 1
                yield from self._document_chunks(doc)
            self.stats.bytes_read += source.size_bytes

    def _document_chunks(self, doc: Document) -> Iterator[Chunk]:
        yield from self.chunker.chunks(doc.source, doc.blocks)

    def _record_duplicate(self, cid: str, sha: str, chunk: Chunk) -> None:
        """The kept copy is the output row with the same sha256 (found first in order)."""
        self.stats.duplicates += 1
        self.stats.duplicate_tokens += chunk.tokens
        row = {"id": cid, "source": chunk.source, "chunk_index": chunk.index,
               "start": chunk.start, "end": chunk.end, "sha256": sha}
        self.duplicates.write(json.dumps(row, ensure_ascii=False) + "\n")
