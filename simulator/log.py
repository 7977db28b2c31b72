"""Message log (every frame in and out, timestamped) and per-channel statistics.

Entries are kept as tuples in a bounded deque (cheap on the hot path) and only turned
into dicts when the admin API asks. Times are `time.time()` seconds.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

_FIELDS = ("seq", "t", "conn", "ns", "dir", "msg")


@dataclass
class ChannelStats:
    conn: int
    ns: str
    channel_id: int
    endpoint: str
    created_t: float
    cancel_t: float | None = None
    fragments: int = 0
    fragments_after_cancel: int = 0
    fragments_after_cancel_t: list[float] = field(default_factory=list)
    first_fragment_t: float | None = None
    last_fragment_t: float | None = None
    slot_wait_start_t: float | None = None
    slot_acquired_t: float | None = None
    closed_t: float | None = None
    stop_reason: str | None = None
    error: str | None = None


class MessageLog:
    def __init__(self, max_entries: int) -> None:
        self._entries: deque[tuple[Any, ...]] = deque(maxlen=max_entries)
        self._seq = itertools.count(1)
        self.channels: dict[tuple[int, int], ChannelStats] = {}

    def record(self, conn: int, ns: str, direction: str, msg: Any) -> None:
        self._entries.append((next(self._seq), time.time(), conn, ns, direction, msg))

    def open_channel(self, conn: int, ns: str, channel_id: int, endpoint: str) -> ChannelStats:
        stats = ChannelStats(conn, ns, channel_id, endpoint, time.time())
        self.channels[(conn, channel_id)] = stats
        return stats

    def entries(self, since: float | None = None, since_seq: int | None = None,
                limit: int | None = None, type_: str | None = None) -> list[dict[str, Any]]:
        out = []
        for entry in self._entries:
            if since is not None and entry[1] < since:
                continue
            if since_seq is not None and entry[0] <= since_seq:
                continue
            if type_ is not None and _msg_type(entry[5]) != type_:
                continue
            out.append(dict(zip(_FIELDS, entry, strict=True)))
            if limit is not None and len(out) >= limit:
                break
        return out

    def channel_list(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.channels.values()]

    def clear(self) -> None:
        self._entries.clear()
        self.channels.clear()


def _msg_type(msg: Any) -> str | None:
    if not isinstance(msg, dict):
        return None
    inner = msg.get("message")
    if isinstance(inner, dict) and "type" in inner:
        return f"{msg.get('type')}:{inner['type']}"
    return msg.get("type")
