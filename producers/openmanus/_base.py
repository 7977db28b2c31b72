"""What both LM Studio providers share: OpenManus' `LLM` interface on top of `_predict`.

A provider subclasses OpenManus' `app.llm.LLM` (agents' pydantic field is typed `LLM`) but
never runs `LLM.__init__` (no OpenAI client, no tiktoken download) and has no tenacity
retries: an error reaches the agent at once, and a context overflow is raised as a
`TokenLimitError` whose `__cause__` is a `TokenLimitExceeded`, which upstream's
`ToolCallAgent.think` handles by finishing the run gracefully.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from openai.types.chat import ChatCompletionMessage

from producers.openmanus._compat import LLM, TokenLimitExceeded, choice_value, format_messages
from producers.openmanus._config import openmanus_llm_values
from producers.openmanus._messages import Reply, completion_message, text_of
from workers.contract import PredictionStats
from workers.error import ContextOverflowError, LmqError
from workers.settings import Settings, get_settings

DEFAULT_ASK_TIMEOUT_S = 600.0  # openai's read timeout, what stock `ask` effectively had


class TokenLimitError(LmqError):
    """The agent's prompt no longer fits: the model's context or OpenManus' input budget.

    Its `__cause__` is OpenManus' `TokenLimitExceeded` (whose own cause is the original
    ContextOverflowError, if any). Deliberately not a ValueError: upstream's
    `ToolCallAgent.think` re-raises ValueErrors but ends the run gracefully on an error
    caused by TokenLimitExceeded.
    """


@dataclass(frozen=True)
class Request:
    """One LLM call, ready for a transport."""

    messages: list[dict[str, Any]]  # OpenAI-style, system messages included
    tools: list[dict[str, Any]] | None
    force_tool: bool
    temperature: float
    max_tokens: int
    timeout_s: float | None
    stream: bool = False


@dataclass(frozen=True)
class CallRecord:
    """The LM Studio prediction stats of one call, as the agent's owner sees them."""

    model: str
    stats: PredictionStats | None
    job_id: str | None = None  # set by the queued provider


StatsCallback = Callable[[CallRecord], Any]


class LMStudioLLMBase(LLM):  # type: ignore[misc]
    """OpenManus `LLM` interface; subclasses implement `_predict` and `count_tokens`."""

    def __new__(cls, *args: Any, **kwargs: Any) -> LMStudioLLMBase:
        # LLM.__new__ would hand back whatever sits in the shared LLM._instances registry;
        # a provider is always a new object, registered explicitly (see use_lmstudio).
        return object.__new__(cls)

    def __init__(self, config_name: str = "default", llm_config: Any = None, *,
                 model: str | None = None, settings: Settings | None = None,
                 max_tokens: int | None = None, temperature: float | None = None,
                 timeout_s: float | None = None, on_stats: StatsCallback | None = None,
                 stats_history: int = 1000) -> None:
        if hasattr(self, "client"):  # OpenManus' own re-init guard
            return
        values = openmanus_llm_values(config_name, llm_config)
        self.settings = settings or get_settings()
        chosen = model or values.model or self.settings.model
        if not chosen:
            raise ValueError("no model: pass model=..., set [llm] model in OpenManus' "
                             "config.toml, or set LMQ_MODEL")
        self.model: str = chosen
        self.max_tokens = int(max_tokens or values.max_tokens)
        self.temperature = float(values.temperature if temperature is None else temperature)
        self.max_input_tokens = values.max_input_tokens
        self.timeout_s = timeout_s
        self.api_type, self.api_key, self.api_version = "lmstudio", "lm-studio", ""
        self.base_url = f"http://{self.settings.lmstudio_host}/v1"
        self.total_input_tokens = 0
        self.total_completion_tokens = 0
        self.on_stats = on_stats
        self.stats_log: deque[CallRecord] = deque(maxlen=stats_history)
        self._last: ContextVar[CallRecord | None] = ContextVar(f"lmq_last_{id(self)}",
                                                                default=None)
        self.echo_stream = True  # upstream prints streamed text to stdout; so do we
        self.client = self._make_client()

    def _make_client(self) -> Any:
        raise NotImplementedError

    async def _predict(self, request: Request) -> Reply:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    # --- the OpenManus interface ---------------------------------------------------------

    async def ask(self, messages: list[Any], system_msgs: list[Any] | None = None,
                  stream: bool = True, temperature: float | None = None) -> str:
        """Plain text; `stream=True` echoes it to stdout as upstream does."""
        formatted = self._format(messages, system_msgs, keep_images=False)
        reply = await self._call(formatted, None, "none", temperature,
                                 self.timeout_s or DEFAULT_ASK_TIMEOUT_S, stream)
        return self._text_or_raise(reply)

    async def ask_tool(self, messages: list[Any], system_msgs: list[Any] | None = None,
                       timeout: int = 300, tools: list[dict[str, Any]] | None = None,
                       tool_choice: Any = "auto", temperature: float | None = None,
                       **kwargs: Any) -> ChatCompletionMessage:
        """The reply as an openai message; never None (an empty reply is an empty message)."""
        choice = choice_value(tool_choice)
        formatted = self._format(messages, system_msgs, keep_images=self._keeps_images())
        reply = await self._call(formatted, tools, choice, temperature,
                                 self.timeout_s or timeout, False)
        return completion_message(reply)

    async def ask_with_images(self, messages: list[Any], images: list[str | dict[str, Any]],
                              system_msgs: list[Any] | None = None, stream: bool = False,
                              temperature: float | None = None) -> str:
        """Text about `images` (URLs, data URLs or {"url": ...}) attached to the last user turn."""
        formatted = self._format(messages, None, keep_images=True)
        if not formatted or formatted[-1]["role"] != "user":
            raise ValueError("The last message must be from the user to attach images")
        formatted[-1] = _with_images(formatted[-1], images)
        formatted = self._format(system_msgs, None, keep_images=True) + formatted
        reply = await self._call(formatted, None, "none", temperature,
                                 self.timeout_s or DEFAULT_ASK_TIMEOUT_S, stream)
        return self._text_or_raise(reply)

    # --- helpers OpenManus (newer versions) exposes ---------------------------------------

    def count_message_tokens(self, messages: list[dict[str, Any]]) -> int:
        """Upstream's heuristic framing (4 per message, 2 overall) around counted text."""
        total = 2
        for message in messages:
            total += 4 + self.count_tokens(text_of(message.get("content")))
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                total += self.count_tokens(function.get("name", ""))
                total += self.count_tokens(function.get("arguments", ""))
        return total

    def update_token_count(self, input_tokens: int, completion_tokens: int = 0) -> None:
        self.total_input_tokens += input_tokens
        self.total_completion_tokens += completion_tokens

    def check_token_limit(self, input_tokens: int) -> bool:
        if self.max_input_tokens is None:
            return True
        return self.total_input_tokens + input_tokens <= self.max_input_tokens

    def get_limit_error_message(self, input_tokens: int) -> str:
        return (f"Request may exceed input token limit (Current: {self.total_input_tokens}, "
                f"Needed: {input_tokens}, Max: {self.max_input_tokens})")

    # --- stats for the agent's owner ------------------------------------------------------

    @property
    def last_stats(self) -> PredictionStats | None:
        """Stats of the last call made by the current asyncio task (else by anyone)."""
        record = self.last_call
        return record.stats if record else None

    @property
    def last_call(self) -> CallRecord | None:
        record = self._last.get()
        if record is None and self.stats_log:
            return self.stats_log[-1]
        return record

    # --- the pipeline -----------------------------------------------------------------------

    def _keeps_images(self) -> bool:
        return False

    @staticmethod
    def _format(messages: list[Any] | None, system_msgs: list[Any] | None, *,
                keep_images: bool) -> list[dict[str, Any]]:
        return (format_messages(system_msgs, keep_images=keep_images)
                + format_messages(messages, keep_images=keep_images))

    async def _call(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                    choice: str, temperature: float | None, timeout_s: float | None,
                    stream: bool) -> Reply:
        if tools:
            for tool in tools:
                if not isinstance(tool, dict) or "type" not in tool:
                    raise ValueError("Each tool must be a dict with 'type' field")
        self._check_budget(messages, tools)
        request = Request(
            messages=messages, tools=(tools or None) if choice != "none" else None,
            force_tool=choice == "required", max_tokens=self.max_tokens, timeout_s=timeout_s,
            temperature=self.temperature if temperature is None else temperature,
            stream=stream)
        try:
            reply = await self._predict(request)
        except ContextOverflowError as exc:
            raise TokenLimitError(str(exc)) from _token_limit(str(exc), exc)
        self._record(reply)
        return reply

    def _check_budget(self, messages: list[dict[str, Any]],
                      tools: list[dict[str, Any]] | None) -> None:
        """Newer OpenManus' cumulative `max_input_tokens` budget (off unless configured)."""
        if self.max_input_tokens is None:
            return
        needed = self.count_message_tokens(messages)
        needed += sum(self.count_tokens(json.dumps(tool)) for tool in tools or [])
        if not self.check_token_limit(needed):
            message = self.get_limit_error_message(needed)
            raise TokenLimitError(message) from _token_limit(message, None)

    def _record(self, reply: Reply) -> None:
        stats = reply.stats
        if stats is not None:
            self.update_token_count(stats.prompt_tokens_count or 0,
                                    stats.predicted_tokens_count or 0)
        record = CallRecord(model=reply.model or self.model, stats=stats, job_id=reply.job_id)
        self.stats_log.append(record)
        self._last.set(record)
        if self.on_stats is not None:
            self.on_stats(record)

    def _text_or_raise(self, reply: Reply) -> str:
        text = reply.content.strip()
        if not text:
            raise ValueError("Empty or invalid response from LLM")
        return text


def _token_limit(message: str, original: BaseException | None) -> Exception:
    """OpenManus' TokenLimitExceeded, to be the __cause__ of what the agent receives: upstream's
    ToolCallAgent.think ends the run gracefully on exactly that chaining."""
    limit = TokenLimitExceeded(message)
    limit.__cause__ = original
    return limit


def _with_images(message: dict[str, Any], images: list[str | dict[str, Any]]) -> dict[str, Any]:
    content = message.get("content")
    parts: list[Any] = ([{"type": "text", "text": content}] if isinstance(content, str)
                        else list(content or []))
    for image in images:
        if isinstance(image, str):
            parts.append({"type": "image_url", "image_url": {"url": image}})
        elif isinstance(image, dict) and "url" in image:
            parts.append({"type": "image_url", "image_url": image})
        elif isinstance(image, dict) and "image_url" in image:
            parts.append(image)
        else:
            raise ValueError(f"Unsupported image format: {image}")
    return {**message, "content": parts}
