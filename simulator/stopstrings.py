"""Stop-string matching over streamed pieces, holding back possible partial matches."""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stop_strings: list[str]) -> None:
        self.stops = [s for s in stop_strings if s]
        self.pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Return (text safe to emit now, whether a stop string was found)."""
        if not self.stops:
            return piece, False
        text = self.pending + piece
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.pending = ""
            return text[: min(hits)], True
        hold = self._partial_suffix(text)
        self.pending = text[len(text) - hold:] if hold else ""
        return text[: len(text) - hold], False

    def _partial_suffix(self, text: str) -> int:
        best = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return text
