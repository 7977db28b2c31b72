"""The HTTP floor under the gateway bench: what the `openai` client and the gateway's server
stack (uvicorn + FastAPI) cost per request on this machine, with no gateway work at all.

`app` answers `POST /v1/chat/completions` with a fixed chat completion after `delay_ms` (a
query parameter), in its own uvicorn process as `lmq serve` runs. The bench sends the same
requests to it with the `openai` async client, and runs `asyncio.sleep(delay)` in its own
process at the same concurrency: the difference is the floor, the latency any gateway
reached through that client adds here before it does anything. The gateway's own share is
what it adds beyond that floor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def floor_process(port: int, answers: Any, timeout_s: float = 60) -> Iterator[str]:
    """`app` under uvicorn on 127.0.0.1:`port`; yields its /v1 URL. `answers(port)` says
    whether its /health is up."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "ops.benchlib.http_floor:app", "--host",
         "127.0.0.1", "--port", str(port), "--log-level", "info"],  # as `lmq serve`
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP floor server did not start (exit {proc.poll()})")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
