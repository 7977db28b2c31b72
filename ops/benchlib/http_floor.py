"""The HTTP floor under the gateway bench: what the `openai` client and the gateway's server
stack (uvicorn + FastAPI) cost per request on this machine, with no gateway work at all.

`app` answers `POST /v1/chat/completions` with a fixed chat completion after `delay_ms` (a
query parameter), in its own uvicorn process as `lmq serve` runs
(`ops.bench_gateway.floor_process`). The bench sends the same
requests to it with the `openai` async client, and runs `asyncio.sleep(delay)` in its own
process at the same concurrency: the difference is the floor, the latency any gateway
reached through that client adds here before it does anything. The gateway's own share is
what it adds beyond that floor.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request

app = FastAPI()

_COMPLETION = {
    "id": "chatcmpl-floor", "object": "chat.completion", "created": 0, "model": "floor",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "A short answer of sixteen "
                             "tokens or so, as the bench's jobs give."}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/chat/completions")
async def chat_completions(request: Request, delay_ms: float = 0.0) -> dict[str, Any]:
    await request.body()  # read as the gateway does before it answers
    await asyncio.sleep(delay_ms / 1000)
    return _COMPLETION
