"""Read a job's generated text from its Redis stream (`workers.keys.fragment_stream`).

Entries are {"t": text}, {"reset": attempt} (the prediction restarted after a dropped
connection: the text read so far is void) and, last, {"end": final_state}. Reading starts at
the first entry, so a reader that arrives after the job finished still gets the whole text while the
stream is kept. `finished()` lets a reader stop when the job ended and no stream exists.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import redis
import redis.asyncio as aioredis

from workers import keys
from workers.error import JobTimeoutError

BLOCK_MS = 500
ENTRIES_PER_READ = 200


RESET = object()  # stands for a {"reset": attempt} entry in what _texts returns


def _texts(entries: list[Any]) -> tuple[list[Any], str | None, bool]:
    """(texts or RESET, last entry id, ended) of one XREAD reply for one stream."""
    texts: list[Any] = []
    last = None
    for entry_id, fields in entries:
        last = entry_id
        if b"end" in fields or "end" in fields:
            return texts, last, True
        if b"reset" in fields or "reset" in fields:
            texts.append(RESET)
            continue
        text = fields.get(b"t", fields.get("t"))
        if text:
            texts.append(text.decode() if isinstance(text, bytes) else text)
    return texts, last, False


def _deliver(texts: list[Any], on_reset: Callable[[], None] | None) -> Iterator[str]:
    for text in texts:
        if text is RESET:
            if on_reset is not None:
                on_reset()
        else:
            yield text


def read_fragments(client: redis.Redis, job_id: str, finished: Callable[[], bool],
                   timeout_s: float | None = None,
                   on_reset: Callable[[], None] | None = None) -> Iterator[str]:
    key = keys.fragment_stream(job_id)
    last: Any = "0-0"
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    drained_after_finish = False
    while True:
        reply = client.xread({key: last}, count=ENTRIES_PER_READ, block=BLOCK_MS)
        if reply:
            texts, last, ended = _texts(reply[0][1])
            yield from _deliver(texts, on_reset)
            if ended:
                return
            continue
        if drained_after_finish:
            return
        drained_after_finish = finished()  # one more read picks up entries that raced in
        if deadline is not None and time.monotonic() > deadline:
            raise JobTimeoutError(f"no end of the text stream of job {job_id} "
                                  f"within {timeout_s:g}s")


async def aread_fragments(url: str, job_id: str, finished: Callable[[], Any],
                          timeout_s: float | None = None,
                          on_reset: Callable[[], None] | None = None) -> AsyncIterator[str]:
    key = keys.fragment_stream(job_id)
    last: Any = "0-0"
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    drained_after_finish = False
    client = aioredis.Redis.from_url(url)
    try:
        while True:
            reply = await client.xread({key: last}, count=ENTRIES_PER_READ, block=BLOCK_MS)
            if reply:
                texts, last, ended = _texts(reply[0][1])
                for text in _deliver(texts, on_reset):
                    yield text
                if ended:
                    return
                continue
            if drained_after_finish:
                return
            drained_after_finish = bool(await finished())
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeoutError(f"no end of the text stream of job {job_id} "
                                      f"within {timeout_s:g}s")
    finally:
        await client.aclose()
