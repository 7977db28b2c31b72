"""Deterministic, unit-norm text embeddings.

Each lower-cased word maps to a fixed random Gaussian vector (seeded by the word and
the dimension); a text embeds as the normalised sum of its words' vectors. Texts that
share words are therefore closer than texts that share none.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

_WORD_RE = re.compile(r"\w+")
_CACHE_MAX = 50_000


class HashEmbedder:
    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def _word_vector(self, word: str, dim: int) -> np.ndarray:
        key = (word, dim)
        vec = self._cache.get(key)
        if vec is None:
            seed = zlib.crc32(word.encode()) ^ (dim << 32)
            vec = np.random.default_rng(seed).standard_normal(dim)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()  # crude bound; words are cheap to rebuild
            self._cache[key] = vec
        return vec

    def embed(self, text: str, dim: int) -> list[float]:
        words = _WORD_RE.findall(text.lower()) or ["<empty>"]
        total = np.zeros(dim)
        for word in words:
            total += self._word_vector(word, dim)
        norm = float(np.linalg.norm(total)) or 1.0
        vector: list[float] = (total / norm).tolist()
        return vector
