"""Server-sent events in OpenAI's stream format: `data: <chunk>` lines, then `data: [DONE]`.

The text comes from the job's fragment stream as the worker writes it; the finish reason,
tool calls, usage and LM Studio's stats come from the result once the job ends. If the
client goes away mid-stream, Starlette cancels this generator and the job is revoked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from producers.gateway.formats import ChunkMaker
from producers.gateway.waiting import Results
from producers.job_handle import JobHandle
from workers.error import JobCancelledError, LmqError

DONE = b"data: [DONE]\n\n"


def event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def job_events(handle: JobHandle, results: Results, model: str, *, chat: bool,
                     include_usage: bool) -> AsyncIterator[bytes]:
    maker = ChunkMaker(handle.id, model, chat)
    finished = False
    try:
        first = maker.first()
        if first is not None:
            yield event(first)
        async for text in handle.astream():
            yield event(maker.text(text))
        try:
            result = (await results.of(handle)).model_dump(mode="json")
        except JobCancelledError as exc:  # cancelled elsewhere: end with the partial text
            result = exc.partial or {}
        except LmqError as exc:
            finished = True
            yield event({"error": {"message": str(exc), "type": "server_error",
                                   "param": None, "code": type(exc).__name__}})
            yield DONE
            return
        finished = True
        if result.get("tool_calls"):
            yield event(maker.tool_calls(result["tool_calls"]))
        if result.get("model"):
            yield event(maker.last(result))
            if include_usage:
                yield event(maker.usage(result))
        yield DONE
    finally:
        if not finished:  # the client left (cancelled generator) or the stream broke
            # No await here: this scope is being cancelled, an await would be cancelled too.
            asyncio.get_running_loop().run_in_executor(None, handle.cancel)
