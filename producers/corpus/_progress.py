"""Progress: a tqdm bar on a terminal, plain lines otherwise (logs, CI, pipes).

The total number of chunks is known only once planning has read the whole corpus; until
then it is estimated from the bytes read so far (chunks planned x total bytes / bytes read),
which is what the bar's ETA rests on.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

LINE_EVERY_S = 5.0


class Progress:
    def __init__(self, total_bytes: int, *, enabled: bool = True, stream: TextIO | None = None,
                 bar: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total_bytes = max(total_bytes, 1)
        self.started = time.monotonic()
        self.chunks = 0
        self.tokens = 0
        self.total = 0
        self._last_line = self.started
        use_bar = self.stream.isatty() if bar is None else bar
        self._bar: Any = self._make_bar() if enabled and use_bar else None

    def _make_bar(self) -> Any:
        from tqdm import tqdm

        return tqdm(total=0, unit="chunk", file=self.stream, dynamic_ncols=True,
                    desc="embedding")

    def estimate(self, planned_chunks: int, bytes_read: int, finished: bool) -> None:
        if finished:
            self.total = planned_chunks
        elif bytes_read:
            self.total = max(planned_chunks, round(planned_chunks * self.total_bytes / bytes_read))
        else:
            self.total = max(self.total, planned_chunks)

    def advance(self, chunks: int, tokens: int) -> None:
        self.chunks += chunks
        self.tokens += tokens
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.total = max(self.total, self.chunks)
            self._bar.set_postfix_str(f"{self.tokens_per_s:,.0f} tok/s", refresh=False)
            self._bar.update(chunks)
        elif time.monotonic() - self._last_line >= LINE_EVERY_S:
            self._line()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.elapsed_s, 1e-9)

    def _line(self) -> None:
        self._last_line = time.monotonic()
        total = max(self.total, self.chunks)
        rate = self.chunks / max(self.elapsed_s, 1e-9)
        eta = (total - self.chunks) / rate if rate else float("nan")
        print(f"embedding: {self.chunks}/{total} chunks, {self.tokens_per_s:,.0f} tok/s, "
              f"elapsed {self.elapsed_s:.0f}s, ETA {eta:.0f}s", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._line()
