"""The gateway's background loop: advances every open batch, whether anyone polls or not.

One loop per gateway process, started in the app's lifespan. Every `ADVANCE_INTERVAL_S`
(or at once when a route pokes it: a batch created or cancelled) it takes the ids of open
batches from Redis and, for each, tries the batch's lock: several gateways sharing one
Redis each run a loop, and whoever holds a batch's lock does its step while the others skip
it (`batch_lifecycle.advance`). The lock expires by itself, so a gateway that died holding
it delays the batch by at most the lock's time to live; long validation renews it.

The steps use the synchronous Redis clients of `JobQueue`, so they run on one thread of
their own, never on the event loop that serves requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from producers.gateway import batch_lifecycle
from producers.gateway.records import OpenBatches
from producers.gateway.state import Gateway

ADVANCE_INTERVAL_S = 0.5
# Counting a batch's jobs reads every job's stored result: a 10,000-job batch is ~15 MB from
# Redis. So a batch is counted at most every total / COUNTED_PER_S seconds (10,000 jobs:
# every 5 s), never less often than MAX_COUNT_INTERVAL_S.
COUNTED_PER_S = 2000
MAX_COUNT_INTERVAL_S = 10.0
log = logging.getLogger("lmq.gateway")


class BatchAdvancer:
    def __init__(self, gw: Gateway, interval_s: float = ADVANCE_INTERVAL_S) -> None:
        self.gw = gw
        self.interval_s = interval_s
        self.open = OpenBatches(gw.batches.client)
        self._wake = asyncio.Event()
        self._stopping = False
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="lmq-batches")
        self._task: asyncio.Task[None] | None = None
        self._counted_at: dict[str, float] = {}  # batch id: when this process last counted

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lmq-batches")

    def poke(self) -> None:
        """Advance now (from the event loop): a batch was created or cancelled."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop between steps; a step under way ends first (validation stops between
        chunks, and the next gateway resumes it)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        adopted = False
        while not self._stopping:
            self._wake.clear()
            try:
                if not adopted:
                    await loop.run_in_executor(self._thread, self._adopt)
                    adopted = True
                await loop.run_in_executor(self._thread, self.tick)
            except Exception:  # Redis away for a moment: log it, try again next time
                log.exception("gateway: advancing batches failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)

    def tick(self) -> None:
        open_ids = self.open.ids()
        self._counted_at = {i: t for i, t in self._counted_at.items() if i in open_ids}
        for batch_id in open_ids:
            if self._stopping:
                return
            self.advance_one(batch_id)

    def _count_due(self, batch_id: str, total: int) -> bool:
        interval_s = min(MAX_COUNT_INTERVAL_S, max(self.interval_s, total / COUNTED_PER_S))
        now = time.monotonic()
        if now - self._counted_at.get(batch_id, float("-inf")) < interval_s:
            return False
        self._counted_at[batch_id] = now
        return True

    def advance_one(self, batch_id: str) -> None:
        token = self.gw.batches.lock(batch_id)
        if token is None:
            return  # another gateway works on it now
        try:
            batch_lifecycle.advance(
                self.gw, batch_id,
                keep_lock=lambda: not self._stopping and self.gw.batches.renew(batch_id, token),
                count_due=lambda total: self._count_due(batch_id, total))
        except Exception:
            log.exception("gateway: advancing batch %s failed", batch_id)
        finally:
            self.gw.batches.unlock(batch_id, token)

    def _adopt(self) -> None:
        """Open batches recorded before the open set existed: advance them too."""
        for record in self.gw.batches.every():
            if record["status"] not in batch_lifecycle.DONE:
                self.open.add(record["id"])
