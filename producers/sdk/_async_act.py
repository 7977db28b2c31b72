"""`AsyncLLM.act`: the loop of `producers.sdk._act` for event-loop code.

The same rounds, callbacks and tool handling; tools may be coroutine functions (awaited) or
plain functions (run in a thread), at most `max_parallel_tool_calls` at once. Cancelling the
task running `act()` cancels the running round's job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Protocol

import lmstudio as lms

from producers.sdk import _config, _result
from producers.sdk._act import InvalidToolHandler, Rounds, ToolBox
from producers.sdk._callbacks import Callbacks
from workers.contract import PredictionConfig


class RoundStream(Protocol):
    tool_calls: list[Any]

    async def wait_for_result(self) -> lms.PredictionResult: ...


class AsyncChatRounds(Protocol):
    """What a round needs of the model handle (`producers.sdk.AsyncLLM`, which imports this)."""

    def chat_stream(self, history: Any, config: PredictionConfig,
                    preset: str | None, callbacks: Callbacks,
                    tools: list[dict[str, Any]] | None = None) -> RoundStream: ...


async def act(llm: AsyncChatRounds, chat: Any, tools: Iterable[Any], *,
              max_prediction_rounds: int | None = None,
              max_parallel_tool_calls: int | None = 1, config: _config.SdkConfig = None,
              preset: str | None = None,
              handle_invalid_tool_request: InvalidToolHandler | None = None,
              **callbacks: Any) -> lms.ActResult:
    started = time.perf_counter()
    agent_chat = lms.Chat.from_history(chat)
    rounds = Rounds(max_prediction_rounds, callbacks)
    toolbox = ToolBox(tools, handle_invalid_tool_request, allow_async=True)
    checked = _config.job_config(config)
    slots = asyncio.Semaphore(max_parallel_tool_calls or 1)
    index = 0
    for index in rounds.indices:
        rounds.fire("on_round_start", index)
        offered = toolbox.definitions if index != rounds.final else None
        stream = llm.chat_stream(agent_chat, checked, preset, rounds.callbacks(index),
                                 tools=offered)
        prediction = await stream.wait_for_result()
        requests = _result.tool_call_requests(stream.tool_calls)
        rounds.fire("on_prediction_completed",
                    lms.PredictionRoundResult.from_result(prediction, index))
        if requests:
            results = await _run_tools(requests, toolbox, slots)
            rounds.fire("on_message", agent_chat.add_assistant_response(prediction, requests))
            rounds.fire("on_message", agent_chat.add_tool_results(results))
        else:
            rounds.fire("on_message", agent_chat.add_assistant_response(prediction))
        rounds.fire("on_round_end", index)
        if not requests:
            break
        if index == rounds.final:
            toolbox.invalid("Model requested tool use on final prediction round.")
            break
    return lms.ActResult(rounds=index + 1, total_time_seconds=time.perf_counter() - started)


async def _run_tools(requests: list[lms.ToolCallRequest], toolbox: ToolBox,
                     slots: asyncio.Semaphore) -> list[Any]:
    async def run(request: lms.ToolCallRequest) -> Any:
        async with slots:
            try:
                return await toolbox.call_async(request)()
            except Exception as exc:  # the SDK reports a failed tool to the model
                return toolbox.failed(exc, request)

    return list(await asyncio.gather(*(run(request) for request in requests)))
