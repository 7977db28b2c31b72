"""`LLM.act`: the SDK's multi-round tool loop, each model round one pool job.

A round is a chat job carrying the tools (the last allowed round carries none, as in the
SDK); its tool calls come back in the result, the tools run here, in the caller's process
(`max_parallel_tool_calls` threads), and their results go into the next round's chat. The
callbacks fire in the SDK's order: `on_round_start`, the prediction callbacks (with the round
index), `on_prediction_completed`, `on_message` for the tool request and the tool results
(or the final answer), `on_round_end`. Leaving `act()` with an exception cancels the
running round's job.

Tool definitions are parsed, tool arguments validated and tool failures reported by the
SDK's own `ChatResponseEndpoint` (built locally, never connected), so a tool behaves here
exactly as under `lmstudio`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any, Protocol

import lmstudio as lms
from lmstudio.json_api import ChatResponseEndpoint

from producers.sdk import _config, _result
from producers.sdk._callbacks import Callbacks, _call
from producers.sdk._stream import PredictionStream
from workers.contract import PredictionConfig

InvalidToolHandler = Callable[[lms.LMStudioPredictionError, Any], str | None]


class ChatRounds(Protocol):
    """What a round needs of the model handle (`producers.sdk.LLM`, which imports this)."""

    def chat_stream(self, history: Any, config: PredictionConfig,
                    preset: str | None, callbacks: Callbacks,
                    tools: list[dict[str, Any]] | None = None) -> PredictionStream: ...


class ToolBox:
    """The caller's tools: their OpenAI definitions for the job, and how to run a call."""

    def __init__(self, tools: Iterable[Any], on_invalid: InvalidToolHandler | None,
                 allow_async: bool = False) -> None:
        llm_tools, tool_map = ChatResponseEndpoint.parse_tools(tools, allow_async)
        self.definitions: list[dict[str, Any]] = [dict(tool) for tool in llm_tools.to_dict()
                                                  .get("tools") or []]
        self._endpoint = ChatResponseEndpoint("tools", lms.Chat(), None, None, None, None, None,
                                              None, None, on_invalid, llm_tools, tool_map)

    def call(self, request: lms.ToolCallRequest) -> Callable[[], Any]:
        return self._endpoint.request_tool_call(request)

    def call_async(self, request: lms.ToolCallRequest) -> Callable[[], Any]:
        return self._endpoint.request_tool_call_async(request)

    def failed(self, exc: Exception, request: lms.ToolCallRequest) -> Any:
        """The tool raised: the SDK's error result for the model (or the handler's text)."""
        return self._endpoint._handle_failed_tool_request(exc, request)

    def invalid(self, message: str) -> None:
        self._endpoint._handle_invalid_tool_request(message)


class Rounds:
    """Round indices, the final round, and the per-round callbacks, as the SDK has them."""

    def __init__(self, max_prediction_rounds: int | None, options: dict[str, Any]) -> None:
        if max_prediction_rounds is not None and max_prediction_rounds < 1:
            raise lms.LMStudioValueError(
                f"Max prediction rounds must be at least 1 ({max_prediction_rounds!r} given)")
        self.indices: Iterable[int] = (range(max_prediction_rounds) if max_prediction_rounds
                                       else itertools.count())
        self.final = (max_prediction_rounds or 0) - 1
        self.options = options

    def fire(self, name: str, *args: Any) -> None:
        callback = self.options.get(name)
        if callback is not None:
            _call(callback, *args)

    def callbacks(self, index: int) -> Callbacks:
        """The prediction callbacks of round `index` (act's take the round index too)."""
        def with_index(name: str) -> Callable[..., Any] | None:
            callback = self.options.get(name)
            return None if callback is None else (lambda *args: callback(*args, index))
        return Callbacks(on_first_token=with_index("on_first_token"),
                         on_prediction_fragment=with_index("on_prediction_fragment"),
                         on_prompt_processing_progress=with_index(
                             "on_prompt_processing_progress"))


def act(llm: ChatRounds, chat: Any, tools: Iterable[Any], *,
        max_prediction_rounds: int | None = None, max_parallel_tool_calls: int | None = 1,
        config: _config.SdkConfig = None, preset: str | None = None,
        handle_invalid_tool_request: InvalidToolHandler | None = None,
        **callbacks: Any) -> lms.ActResult:
    started = time.perf_counter()
    agent_chat = lms.Chat.from_history(chat)
    rounds = Rounds(max_prediction_rounds, callbacks)
    toolbox = ToolBox(tools, handle_invalid_tool_request)
    checked = _config.job_config(config)
    index = 0
    with ThreadPoolExecutor(max_parallel_tool_calls) as pool:
        for index in rounds.indices:
            rounds.fire("on_round_start", index)
            offered = toolbox.definitions if index != rounds.final else None
            stream = llm.chat_stream(agent_chat, checked, preset, rounds.callbacks(index),
                                     tools=offered)
            prediction = stream.wait_for_result()
            requests = _result.tool_call_requests(stream.tool_calls)
            rounds.fire("on_prediction_completed",
                        lms.PredictionRoundResult.from_result(prediction, index))
            _record_round(agent_chat, prediction, requests, toolbox, pool, rounds)
            rounds.fire("on_round_end", index)
            if not requests:
                break
            if index == rounds.final:
                toolbox.invalid("Model requested tool use on final prediction round.")
                break
    return lms.ActResult(rounds=index + 1, total_time_seconds=time.perf_counter() - started)


def _record_round(agent_chat: lms.Chat, prediction: lms.PredictionResult,
                  requests: list[lms.ToolCallRequest], toolbox: ToolBox,
                  pool: ThreadPoolExecutor, rounds: Rounds) -> None:
    """Run the round's tool calls; add the answer (and tool results) to the chat."""
    if not requests:
        rounds.fire("on_message", agent_chat.add_assistant_response(prediction))
        return
    pending: dict[Future[Any], lms.ToolCallRequest] = {
        pool.submit(toolbox.call(request)): request for request in requests}
    results = [_outcome(future, pending[future], toolbox) for future in as_completed(pending)]
    rounds.fire("on_message", agent_chat.add_assistant_response(prediction, requests))
    rounds.fire("on_message", agent_chat.add_tool_results(results))


def _outcome(future: Future[Any], request: lms.ToolCallRequest, toolbox: ToolBox) -> Any:
    exc = future.exception()
    if exc is None:
        return future.result()
    if not isinstance(exc, Exception):
        raise exc  # KeyboardInterrupt and friends end act()
    return toolbox.failed(exc, request)
