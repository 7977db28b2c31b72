"""Find the documents under the paths a user gives, in a deterministic order."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# File suffix -> reader kind.
KIND_FOR_SUFFIX: dict[str, str] = {
    ".txt": "text", ".text": "text", ".md": "text", ".markdown": "text", ".rst": "text",
    ".html": "html", ".htm": "html",
    ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".pdf": "pdf",
}


@dataclass(frozen=True)
class SourceFile:
    path: Path
    kind: str

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def discover(paths: Iterable[str | os.PathLike[str]]) -> Iterator[SourceFile]:
    """Yield the supported files under `paths` (files or directories), sorted, no repeats.

    A file named explicitly is read even with an unknown suffix (as plain text); inside
    directories only known suffixes count and hidden entries are skipped.
    """
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"no such file or directory: {path}")
        found = _walk(path) if path.is_dir() else [_explicit(path)]
        for source in found:
            resolved = source.path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                yield source


def _explicit(path: Path) -> SourceFile:
    return SourceFile(path, KIND_FOR_SUFFIX.get(path.suffix.lower(), "text"))


def _walk(root: Path) -> Iterator[SourceFile]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            kind = KIND_FOR_SUFFIX.get(Path(name).suffix.lower())
            if kind and not name.startswith("."):
                yield SourceFile(Path(dirpath) / name, kind)
