"""Token counts from the embedding model's own tokenizer, through LM Studio.

The SDK has no batch `countTokens`, so a window of texts goes out as concurrent calls on
one client (threads share it once the namespace is connected), and counts are cached by
text so repeated boilerplate costs nothing.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

CACHE_ENTRIES = 100_000
COUNT_CONCURRENCY = 16


class LMStudioTokenCounter:
    """`count_many` over SDK `count_tokens` on the embedding model `model`."""

    def __init__(self, host: str, model: str, concurrency: int = COUNT_CONCURRENCY) -> None:
        import lmstudio as lms

        self._client: Any = lms.Client(host)
        self._client.embedding.list_loaded()  # connect from one thread before fanning out
        self.model: Any = self._client.embedding.model(model)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="lmq-count")
        self._cache: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()
        self.calls = 0

    def context_length(self) -> int | None:
        length = int(self.model.get_context_length())
        return length if length > 0 else None

    def count_many(self, texts: Sequence[str]) -> list[int]:
        keys = [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts]
        found = self._cached(keys)
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if missing:
            counts = self._pool.map(self.model.count_tokens, missing.values())
            fresh = dict(zip(missing, counts, strict=True))
            self.calls += len(fresh)
            self._store(fresh)
            found.update(fresh)
        return [found[k] for k in keys]

    def _cached(self, keys: list[bytes]) -> dict[bytes, int]:
        with self._lock:
            hits = {k: self._cache[k] for k in keys if k in self._cache}
            for key in hits:
                self._cache.move_to_end(key)
        return hits

    def _store(self, counts: dict[bytes, int]) -> None:
        with self._lock:
            self._cache.update(counts)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> LMStudioTokenCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
