"""A realistic document corpus of any size, for the corpus memory benchmark.

English prose from the docstrings of this Python's standard library (so the same on every
machine with the same Python, and no download), cut into sentences and recombined into
paragraphs and documents: file sizes spread from 2 KB to 1 MB, txt / md / html / jsonl,
nested folders, a shared licence header on some files (whose chunks are duplicates), and
some files copied whole (all their chunks duplicates).
"""

from __future__ import annotations

import ast
import json
import math
import random
import re
import sysconfig
from pathlib import Path

FILES_PER_DIR = 400
COPY_SHARE = 0.02  # files that repeat an earlier file byte for byte
HEADER_SHARE = 0.10  # files that open with the shared licence header
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def stdlib_sentences(limit_files: int | None = None) -> list[str]:
    """Sentences (30-300 characters, mostly letters) of the stdlib's docstrings, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: set[str] = set()
    paths = sorted(p for p in root.rglob("*.py")
                   if not {"test", "tests", "site-packages"} & set(p.parts))
    for path in paths[:limit_files]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                          | ast.AsyncFunctionDef):
                found.update(_sentences(ast.get_docstring(node) or ""))
    return sorted(found)


def _sentences(doc: str) -> list[str]:
    out = []
    for paragraph in doc.split("\n\n"):
        for sentence in _SENTENCE_RE.split(" ".join(paragraph.split())):
            letters = sum(c.isalpha() or c == " " for c in sentence)
            if 30 <= len(sentence) <= 300 and letters > 0.85 * len(sentence):
                out.append(sentence)
    return out


class _Writer:
    def __init__(self, sentences: list[str], rng: random.Random) -> None:
        self.sentences = sentences
        self.rng = rng
        self.header = "\n\n".join(self.paragraph() for _ in range(6))

    def paragraph(self) -> str:
        rng = self.rng
        if rng.random() < 0.08:  # a list
            return "\n".join(f"- {s}" for s in rng.choices(self.sentences, k=rng.randint(2, 6)))
        return " ".join(rng.choices(self.sentences, k=rng.randint(1, 8)))

    def document(self, size: int, kind: str) -> str:
        rng = self.rng
        parts = [self.header] if rng.random() < HEADER_SHARE else []
        length = sum(len(p) for p in parts)
        while length < size:
            parts.append(self.paragraph())
            length += len(parts[-1]) + 2
            if kind in ("md", "html") and rng.random() < 0.1:
                parts.append(" ".join(rng.choice(self.sentences).split()[:6]).rstrip("."))
                parts[-1] = f"## {parts[-1]}" if kind == "md" else f"<h2>{parts[-1]}</h2>"
        if kind == "html":
            body = "\n".join(p if p.startswith("<h2>") else f"<p>{p}</p>" for p in parts)
            return f"<html><head><title>doc</title></head><body>\n{body}\n</body></html>\n"
        if kind == "jsonl":
            records: list[str] = []
            start = 0
            while start < len(parts):
                step = rng.randint(1, 20)
                records.append(json.dumps({"id": len(records), "text": "\n\n".join(
                    parts[start : start + step])}))
                start += step
            return "\n".join(records) + "\n"
        return "\n\n".join(parts) + "\n"


def generate(root: Path, size_mb: float, seed: int = 11) -> dict[str, int]:
    """Write ~size_mb of documents under `root`; returns counts (files, copies, bytes)."""
    rng = random.Random(seed)
    writer = _Writer(stdlib_sentences(), rng)
    target = int(size_mb * 1024 * 1024)
    written = files = copies = 0
    earlier: list[Path] = []
    while written < target:
        folder = root / f"part{files // FILES_PER_DIR:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        kind = rng.choices(["txt", "md", "html", "jsonl"], weights=[70, 20, 5, 5])[0]
        if earlier and rng.random() < COPY_SHARE:
            source = rng.choice(earlier)
            data = source.read_bytes()
            path = folder / f"copy{files:06d}{source.suffix}"
            copies += 1
        else:
            size = min(int(math.exp(rng.uniform(math.log(2_000), math.log(1_000_000)))),
                       target - written + 1)
            data = writer.document(size, kind).encode()
            path = folder / f"doc{files:06d}.{kind}"
            earlier.append(path)
        path.write_bytes(data)
        written += len(data)
        files += 1
    return {"files": files, "copies": copies, "bytes": written}
