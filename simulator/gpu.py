"""Simulated GPU: VRAM accounting and per-instance prediction slots."""

from __future__ import annotations

import asyncio
from collections import Counter


class OutOfMemoryError(Exception):
    def __init__(self, needed_bytes: int, free_bytes: int) -> None:
        super().__init__(needed_bytes, free_bytes)
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes


class Vram:
    """Byte reservations keyed by owner (an instance's weights, a prediction's KV)."""

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self._held: Counter[str] = Counter()

    @property
    def used_bytes(self) -> int:
        return sum(self._held.values())

    @property
    def free_bytes(self) -> int:
        return self.total_bytes - self.used_bytes

    def reserve(self, owner: str, nbytes: int) -> None:
        free = self.free_bytes
        if nbytes > free:
            raise OutOfMemoryError(nbytes, free)
        self._held[owner] += nbytes

    def release(self, owner: str) -> None:
        self._held.pop(owner, None)

    def snapshot(self) -> dict[str, object]:
        return {"total_bytes": self.total_bytes, "used_bytes": self.used_bytes,
                "free_bytes": self.free_bytes, "held": dict(self._held)}


class SlotPool:
    """N parallel slots; extra predictions wait in FIFO order, as in LM Studio."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._sem = asyncio.Semaphore(size)
        self.waiting = 0

    @property
    def in_use(self) -> int:
        return self.size - self._sem._value  # noqa: SLF001 - cheap, read-only peek

    async def acquire_unless(self, cancelled: asyncio.Event) -> bool:
        """Take a slot, or give up (False) if `cancelled` is set while queued."""
        if not self._sem.locked():
            await self._sem.acquire()  # uncontended: returns without suspending
            return True
        acquire = asyncio.ensure_future(self.acquire())
        waiter = asyncio.ensure_future(cancelled.wait())
        try:
            await asyncio.wait({acquire, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the socket closed while queued: leak no slot
            waiter.cancel()
            if acquire.done() and not acquire.cancelled():
                self.release()
            acquire.cancel()
            raise
        waiter.cancel()
        if acquire.done():
            return True
        acquire.cancel()
        return False

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._sem.release()
