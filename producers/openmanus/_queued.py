"""`QueuedLMStudioProvider`: OpenManus' LLM where every call is a job on the worker pool.

Calls are `JobQueue.achat` jobs awaited on the event loop (Redis pub/sub, no thread per
wait), so many agents in one process make progress together while the pool decides what
runs on the GPUs. Cancelling the awaiting task revokes the job (the worker then cancels
the prediction in LM Studio); a per-call timeout revokes it too.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from openai.types.chat import ChatCompletionMessage

from producers.forced_tools import forced_config
from producers.job_building import check_deadlines
from producers.openmanus._base import LMStudioLLMBase, Request
from producers.openmanus._messages import (
    Reply,
    completion_message,
    job_safe_messages,
    split_system,
)
from workers.contract import ChatResult, PredictionConfig, Tool
from workers.error import JobTimeoutError

_CHARS_PER_TOKEN = 4  # local estimate only; real counts come back in each job's stats


class QueuedLMStudioProvider(LMStudioLLMBase):
    """Queued provider: `ask`, `ask_tool`, `ask_with_images` as jobs on `lmq.<model>`.

    `queue` defaults to `JobQueue(settings)`. `enqueue_anyway=True` submits even when no
    live worker serves the model (the job waits for one) instead of raising
    ModelNotServedError. `expires_s` / `time_limit_s` go on every call's job: a step no
    worker started in time fails with JobExpiredError (it never runs), a prediction running
    past its limit is cancelled (JobCancelledError with the partial reply).
    """

    queue: Any

    def __init__(self, *args: Any, queue: Any = None, enqueue_anyway: bool = False,
                 expires_s: float | None = None, time_limit_s: float | None = None,
                 **kwargs: Any) -> None:
        self._queue_arg = queue
        self.enqueue_anyway = enqueue_anyway
        self.deadlines = check_deadlines(expires_s=expires_s, time_limit_s=time_limit_s)
        super().__init__(*args, **kwargs)

    def _make_client(self) -> Any:
        if self._queue_arg is None:
            from producers import JobQueue

            self._queue_arg = JobQueue(self.settings)
        self.queue = self._queue_arg
        return self.queue

    # --- submit / collect: the two halves of one call --------------------------------------

    async def asubmit(self, request: Request) -> str:
        """Enqueue the call as a chat job; returns the job id (a plain string)."""
        system, rest = split_system(job_safe_messages(request.messages))
        config = PredictionConfig.model_validate(
            {"temperature": min(request.temperature, 5.0), "max_tokens": request.max_tokens})
        tools = request.tools
        if request.force_tool and tools:  # "required": LM Studio's force, as the gateway's
            config = forced_config(config, [Tool.model_validate(t) for t in tools])
            tools = None
        handle = await self.queue.achat(
            self.model, rest or [{"role": "user", "content": "Continue."}], system_prompt=system,
            tools=tools, config=config, enqueue_anyway=self.enqueue_anyway,
            priority="high",  # an agent (and whoever runs it) waits on every step
            **self.deadlines)
        return str(handle.id)

    async def acollect(self, job_id: str, timeout_s: float | None = None) -> Reply:
        """Await the job's result without blocking the loop; cancel/timeout revoke the job."""
        handle = self.queue.handle(job_id)
        try:
            result = await handle.aresult(timeout=timeout_s)
        except JobTimeoutError:
            await asyncio.to_thread(handle.cancel)
            raise
        except asyncio.CancelledError:
            # JobHandle.aresult revokes on cancel already; revoking twice is harmless and
            # covers a cancel that lands between submit and the wait.
            with contextlib.suppress(Exception):
                handle.cancel()
            raise
        return reply_of(result)

    async def _predict(self, request: Request) -> Reply:
        job_id = await self.asubmit(request)
        reply = await self.acollect(job_id, request.timeout_s)
        if request.stream and self.echo_stream:
            print(reply.content, flush=True)  # a result backend does not stream
        return reply

    async def collect_message(self, job_id: str,
                              timeout_s: float | None = None) -> ChatCompletionMessage:
        """A submitted call's reply as an openai message (stats recorded like any call)."""
        reply = await self.acollect(job_id, timeout_s)
        self._record(reply)
        return completion_message(reply)

    def count_tokens(self, text: str) -> int:
        """A local estimate (~4 characters a token): the queue side has no LM Studio line.
        Token totals use the real counts LM Studio reports with each job."""
        return (len(text) + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN if text else 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.queue.close()


def reply_of(result: ChatResult) -> Reply:
    """A job's ChatResult as a provider reply."""
    calls = [call.model_dump(mode="json") for call in result.tool_calls]
    return Reply(content=result.content, tool_calls=calls, stats=result.stats,
                 job_id=result.job_id, model=result.model.model_key)
