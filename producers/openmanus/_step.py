"""Agent steps in the background: submit the LLM call of a step, collect it later.

    job_id = await submit_step(agent)          # returns at once; a plain string
    ...                                        # keep working; persist job_id (and memory)
    message = await collect_step(job_id)       # any process, even after a restart
    result = await finish_step(agent, message) # think() with that reply, then act()

`submit_step` builds exactly the request `ToolCallAgent.think` would send (its memory plus
the next-step prompt, its system prompt, tools and tool choice) without touching the agent.
`finish_step` then runs the agent's own `think()` against the collected reply (so upstream's
bookkeeping is kept, whatever the OpenManus version) and `act()`, i.e. one full step.
To survive a restart, save `agent.memory.model_dump_json()` along with the job id and load
it into the rebuilt agent (`agent.memory = Memory.model_validate_json(saved)`).
"""

from __future__ import annotations

from typing import Any

from openai.types.chat import ChatCompletionMessage

from producers.openmanus._base import Request
from producers.openmanus._compat import LLM, Message, choice_value, format_messages
from producers.openmanus._queued import QueuedLMStudioProvider
from producers.openmanus._setup import registered_provider


def step_request(agent: Any, provider: QueuedLMStudioProvider) -> Request:
    """What `agent.think()` would ask its LLM right now."""
    messages = list(agent.messages)
    if getattr(agent, "next_step_prompt", None):
        messages.append(Message.user_message(agent.next_step_prompt))
    system = [Message.system_message(agent.system_prompt)] if agent.system_prompt else []
    choice = choice_value(getattr(agent, "tool_choices", "auto"))
    tools = agent.available_tools.to_params() if choice != "none" else None
    formatted = (format_messages(system, keep_images=False)
                 + format_messages(messages, keep_images=False))
    return Request(messages=formatted, tools=tools or None, force_tool=choice == "required",
                   temperature=provider.temperature, max_tokens=provider.max_tokens,
                   timeout_s=provider.timeout_s)


async def submit_step(agent: Any, provider: QueuedLMStudioProvider | None = None) -> str:
    """Enqueue the agent's next LLM call; returns its job id at once."""
    provider = provider or _queued_provider()
    return await provider.asubmit(step_request(agent, provider))


async def collect_step(job_id: str, timeout: float | None = None,
                       provider: QueuedLMStudioProvider | None = None) -> ChatCompletionMessage:
    """The reply of a submitted step (waits without blocking the loop)."""
    provider = provider or _queued_provider()
    return await provider.collect_message(job_id, timeout)


def step_ready(job_id: str, provider: QueuedLMStudioProvider | None = None) -> bool:
    """True once the step's job has finished (successfully or not); never blocks long."""
    provider = provider or _queued_provider()
    return bool(provider.queue.handle(job_id).finished())


async def finish_step(agent: Any, message: ChatCompletionMessage) -> str:
    """Run one agent step whose LLM reply is `message`: think() then act()."""
    original = agent.llm
    agent.llm = _Replay(message)
    try:
        agent.current_step += 1
        proceed = await agent.think()
    finally:
        agent.llm = original
    if not proceed:
        return "Thinking complete - no action needed"
    return str(await agent.act())


class _Replay(LLM):  # type: ignore[misc]
    """An LLM whose one answer is already known (the collected step)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Replay:
        return object.__new__(cls)

    def __init__(self, message: ChatCompletionMessage) -> None:
        self.client = None
        self.message = message

    async def ask_tool(self, *args: Any, **kwargs: Any) -> ChatCompletionMessage:
        return self.message


_fallback: list[QueuedLMStudioProvider] = []


def _queued_provider() -> QueuedLMStudioProvider:
    """The registered queued provider, else one built from config and settings (cached)."""
    provider = registered_provider()
    if isinstance(provider, QueuedLMStudioProvider):
        return provider
    if not _fallback:
        _fallback.append(QueuedLMStudioProvider(enqueue_anyway=True))
    return _fallback[0]
