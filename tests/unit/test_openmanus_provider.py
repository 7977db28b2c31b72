"""The providers' OpenManus contract, on a fake transport (needs OpenManus, no network)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.openmanus import require_openmanus

require_openmanus()

from app.llm import LLM  # noqa: E402
from app.schema import Message  # noqa: E402

from producers.openmanus import TokenLimitError, TokenLimitExceeded, use_lmstudio  # noqa: E402
from producers.openmanus._base import LMStudioLLMBase, Request  # noqa: E402
from producers.openmanus._messages import Reply, openai_tool_call  # noqa: E402
from producers.openmanus._queued import QueuedLMStudioProvider, reply_of  # noqa: E402
from producers.openmanus.example_agent import echo_agent, echo_tool  # noqa: E402
from workers.contract import ChatResult, PredictionStats  # noqa: E402
from workers.error import ContextOverflowError  # noqa: E402
from workers.settings import Settings  # noqa: E402

SETTINGS = Settings(lmstudio_host="127.0.0.1:9")


class FakeProvider(LMStudioLLMBase):
    """Replays scripted replies; records the requests it was given."""

    def _make_client(self) -> object:
        self.requests: list[Request] = []
        self.replies: list[Reply | Exception] = []
        return object()

    async def _predict(self, request: Request) -> Reply:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def stats(prompt: int = 10, predicted: int = 2, reason: str = "eosFound") -> PredictionStats:
    return PredictionStats(stop_reason=reason, prompt_tokens_count=prompt,
                           predicted_tokens_count=predicted)


def tool_reply(name: str, **args: object) -> Reply:
    return Reply(content="", tool_calls=[openai_tool_call(None, name, args)],
                 stats=stats(reason="toolCalls"))


@pytest.fixture(autouse=True)
def clean_registry():
    saved = dict(LLM._instances)
    yield
    LLM._instances.clear()
    LLM._instances.update(saved)


@pytest.fixture()
def fake() -> FakeProvider:
    return FakeProvider(model="m", settings=SETTINGS, temperature=0.0, max_tokens=64)


def test_a_provider_is_an_openmanus_llm_with_its_attributes(fake: FakeProvider) -> None:
    assert isinstance(fake, LLM)
    assert (fake.model, fake.max_tokens, fake.temperature) == ("m", 64, 0.0)
    assert fake.base_url == "http://127.0.0.1:9/v1" and fake.api_key and fake.client
    assert FakeProvider(model="m", settings=SETTINGS) is not fake  # not LLM's singleton


def test_real_agent_runs_on_scripted_replies(fake: FakeProvider) -> None:
    fake.replies = [tool_reply("echo", text="hi"), tool_reply("terminate", status="success")]
    agent = echo_agent(fake)
    asyncio.run(agent.run("Please echo 'hi'."))
    assert echo_tool(agent).calls == ["hi"]
    first = fake.requests[0]
    assert first.messages[0] == {"role": "system", "content": agent.system_prompt}
    assert [t["function"]["name"] for t in first.tools] == ["echo", "terminate"]
    assert not first.force_tool and first.timeout_s == 300  # upstream HEAD default
    assert fake.total_input_tokens == 20 and fake.total_completion_tokens == 4


def test_context_overflow_has_token_limit_exceeded_as_cause(fake: FakeProvider) -> None:
    fake.replies = [ContextOverflowError("n_keep: 5000 >= n_ctx: 4096")]
    with pytest.raises(TokenLimitError) as info:
        asyncio.run(fake.ask_tool([Message.user_message("x")], tools=[]))
    assert not isinstance(info.value, ValueError)  # upstream's think() re-raises ValueErrors
    assert isinstance(info.value.__cause__, TokenLimitExceeded)
    assert isinstance(info.value.__cause__.__cause__, ContextOverflowError)
    assert "n_ctx" in str(info.value.__cause__)
    assert not fake.replies and len(fake.requests) == 1  # tried once


def test_upstream_budget_max_input_tokens(fake: FakeProvider) -> None:
    fake.max_input_tokens = 5
    with pytest.raises(TokenLimitError) as info:
        asyncio.run(fake.ask([{"role": "user", "content": "one two three four"}]))
    assert isinstance(info.value.__cause__, TokenLimitExceeded)
    assert fake.requests == []  # refused before any request


def test_tool_choice(fake: FakeProvider) -> None:
    tools = [{"type": "function", "function": {"name": "t"}}]
    fake.replies = [Reply(content="a"), Reply(content="b"), Reply(content="c")]

    async def three() -> None:
        await fake.ask_tool([{"role": "user", "content": "x"}], tools=tools, tool_choice="none")
        await fake.ask_tool([{"role": "user", "content": "x"}], tools=tools,
                            tool_choice="required")
        await fake.ask_tool([{"role": "user", "content": "x"}], tools=tools)

    asyncio.run(three())
    assert fake.requests[0].tools is None
    assert fake.requests[1].force_tool and fake.requests[1].tools == tools
    assert not fake.requests[2].force_tool
    with pytest.raises(ValueError, match="tool_choice"):
        asyncio.run(fake.ask_tool([{"role": "user", "content": "x"}], tool_choice="sometimes"))
    with pytest.raises(ValueError, match="'type'"):
        asyncio.run(fake.ask_tool([{"role": "user", "content": "x"}], tools=[{"x": 1}]))


def test_empty_reply_is_an_empty_message_for_tools_and_an_error_for_ask(fake) -> None:
    fake.replies = [Reply(content=""), Reply(content="  ")]
    message = asyncio.run(fake.ask_tool([{"role": "user", "content": "x"}]))
    assert message is not None and message.content == "" and not message.tool_calls
    with pytest.raises(ValueError, match="Empty"):
        asyncio.run(fake.ask([{"role": "user", "content": "x"}], stream=False))


def test_timeout_override(fake: FakeProvider) -> None:
    fake.timeout_s = 900
    fake.replies = [Reply(content="a")]
    asyncio.run(fake.ask_tool([{"role": "user", "content": "x"}], timeout=30))
    assert fake.requests[0].timeout_s == 900


def test_last_stats_are_per_task_and_reported(fake: FakeProvider) -> None:
    seen = []
    fake.on_stats = seen.append
    fake.replies = [Reply(content="a", stats=stats(1)), Reply(content="b", stats=stats(2))]

    async def ask_and_read(delay: float) -> int:
        await asyncio.sleep(delay)
        await fake.ask([{"role": "user", "content": "x"}], stream=False)
        await asyncio.sleep(0.05 - delay)
        return fake.last_stats.prompt_tokens_count

    async def both() -> list[int]:
        return list(await asyncio.gather(ask_and_read(0.0), ask_and_read(0.02)))

    assert asyncio.run(both()) == [1, 2]  # each task sees its own call, not the latest
    assert [r.stats.prompt_tokens_count for r in seen] == [1, 2]
    assert fake.last_stats.prompt_tokens_count == 2


def test_images_are_attached_to_the_last_user_message(fake: FakeProvider) -> None:
    fake.replies = [Reply(content="a cat")]
    asyncio.run(fake.ask_with_images([{"role": "user", "content": "what?"}],
                                     ["data:image/png;base64,AA", {"url": "http://x/y.png"}]))
    content = fake.requests[0].messages[-1]["content"]
    assert content[0] == {"type": "text", "text": "what?"}
    assert [p["image_url"]["url"] for p in content[1:]] == ["data:image/png;base64,AA",
                                                            "http://x/y.png"]
    with pytest.raises(ValueError, match="last message"):
        asyncio.run(fake.ask_with_images([{"role": "assistant", "content": "x"}], ["u"]))


def test_use_lmstudio_registers_before_agents_are_built() -> None:
    provider = use_lmstudio("m", settings=SETTINGS, names=("default", "toolcall"))
    assert LLM() is provider and LLM("toolcall") is provider
    assert echo_agent().llm is provider
    queued = use_lmstudio("m", queued=True, settings=SETTINGS, queue=object())
    assert isinstance(queued, QueuedLMStudioProvider) and LLM() is queued


def test_model_comes_from_openmanus_config_when_not_given() -> None:
    from app.config import config

    provider = use_lmstudio(settings=SETTINGS)
    assert provider.model == config.llm["default"].model
    assert provider.max_tokens == config.llm["default"].max_tokens


def test_reply_of_a_job_result() -> None:
    result = ChatResult.model_validate({
        "job_id": "j1", "model": {"model_key": "m"}, "worker": "w", "content": "",
        "timing": {"started_at": 1.0, "finished_at": 2.0, "run_s": 1.0},
        "tool_calls": [{"id": "c", "function": {"name": "echo", "arguments": "{}"}}],
        "stats": {"stop_reason": "toolCalls"}})
    reply = reply_of(result)
    assert reply.job_id == "j1" and reply.model == "m"
    assert reply.tool_calls == [{"id": "c", "type": "function",
                                 "function": {"name": "echo", "arguments": "{}"}}]
