"""Wait for a job's result while watching the HTTP client: a client that goes away
cancels its job (the prediction stops in LM Studio instead of running for no one)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from producers.job_handle import JobHandle


class ClientGone(Exception):
    """The client disconnected before its job finished; the job was cancelled."""


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        continue


async def result_unless_gone(request: Request, handle: JobHandle) -> Any:
    """The job's result; ClientGone (with the job revoked) if the client left first."""
    waiter = asyncio.ensure_future(handle.aresult())
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if waiter.done():
        return waiter.result()
    waiter.cancel()  # aresult() revokes the job when cancelled
    await asyncio.gather(waiter, return_exceptions=True)
    raise ClientGone(handle.id)
