"""Wait for a job's result while watching the HTTP client: a client that goes away
cancels its job (the prediction stops in LM Studio instead of running for no one)."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from starlette.requests import Request

from producers import result_wait
from producers.job_handle import JobHandle
from producers.outcome import result_or_raise


class ClientGone(Exception):
    """The client disconnected before its job finished; the job was cancelled."""


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        continue


class Results:
    """Waits for job results on one shared Redis client: a request opens no client of its
    own (`JobHandle.aresult` does, which a long-lived server need not pay per request)."""

    def __init__(self, app: Celery, url: str) -> None:
        self.app = app
        self.client = aioredis.Redis.from_url(url)

    async def of(self, handle: JobHandle) -> Any:
        """`handle.aresult()`: if the awaiting task is cancelled, so is the job."""
        try:
            meta = await result_wait.await_meta(self.app, "", handle.id, None,
                                                client=self.client,
                                                expires_at=handle.expires_at())
        except asyncio.CancelledError:
            # No await: the task is being cancelled; the revoke runs in a thread meanwhile.
            asyncio.get_running_loop().run_in_executor(None, handle.cancel)
            raise
        return result_or_raise(handle.id, meta["status"], meta.get("result"))

    async def aclose(self) -> None:
        await self.client.aclose()


async def result_unless_gone(request: Request, handle: JobHandle, results: Results) -> Any:
    """The job's result; ClientGone (with the job revoked) if the client left first."""
    waiter = asyncio.ensure_future(results.of(handle))
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if waiter.done():
        return waiter.result()
    waiter.cancel()  # Results.of() revokes the job when cancelled
    await asyncio.gather(waiter, return_exceptions=True)
    raise ClientGone(handle.id)
