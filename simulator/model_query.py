"""Matching LM Studio model queries: identifiers, keys and path-style ids.

LM Studio resolves `{"identifier": ...}` against loaded instance identifiers, model keys
and model paths. A path-style id (`publisher/repo[/file]`, e.g.
`hugging-quants/llama-3.2-1b-instruct`) matches case-insensitively against a model's path
relative to the models folder (`publisher/repo/file.gguf`): every segment but the last
equal, the last a prefix of the path's segment at that depth
(`llama-3.2-1b-instruct` of `Llama-3.2-1B-Instruct-GGUF`). Exact matches win over
prefix ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def _segments(text: str) -> list[str]:
    return [s for s in text.replace("\\", "/").casefold().split("/") if s]


def path_match_rank(query: str, rel_path: str) -> int | None:
    """0 for the whole path, 1 for a path-style prefix match, None for no match."""
    wanted, have = _segments(query), _segments(rel_path)
    if len(wanted) < 2 or len(wanted) > len(have):
        return None  # a path-style id names at least publisher/repo
    if wanted == have:
        return 0
    head_equal = wanted[:-1] == have[:len(wanted) - 1]
    return 1 if head_equal and have[len(wanted) - 1].startswith(wanted[-1]) else None


def best_by_path(query: str, candidates: Iterable[tuple[str, T]]) -> T | None:
    """The candidate whose (relative path, item) matches `query` best; first on ties."""
    best: tuple[int, T] | None = None
    for rel_path, item in candidates:
        rank = path_match_rank(query, rel_path)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, item)
    return best[1] if best else None
