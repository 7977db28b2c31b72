"""Upstream OpenManus with its own OpenAI client (`[llm] base_url` at `lmq serve`): a real
ToolCallAgent runs its steps through the gateway, each LLM call a job on the pool. Real
uvicorn in a thread, real Redis, a real worker, the simulator as LM Studio."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from tests.support.openmanus import require_openmanus

require_openmanus()

from app.config import LLMSettings  # noqa: E402
from app.llm import LLM  # noqa: E402

from producers.gateway.server import serve_in_thread  # noqa: E402
from producers.openmanus.example_agent import echo_agent, echo_tool  # noqa: E402
from producers.redis_server import RedisServer  # noqa: E402
from tests.support.pool import pool_on_database  # noqa: E402

CHAT = "llama-3.2-1b-instruct"
KEY = "sk-openmanus"
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def base_url(redis_server: RedisServer, sim: object) -> Iterator[str]:
    with pool_on_database(redis_server, sim, 14, [CHAT]) as pool:
        settings = pool.settings.model_copy(update={"api_keys": SecretStr(f"{KEY}=manus")})
        with serve_in_thread(settings) as url:
            yield url


@pytest.fixture()
def stock_llm(base_url: str) -> Iterator[LLM]:
    """OpenManus' own LLM class, configured as its config.toml would: an AsyncOpenAI client
    with base_url at the gateway (no adapter of ours)."""
    saved = dict(LLM._instances)
    settings = LLMSettings(model=CHAT, base_url=base_url, api_key=KEY, max_tokens=200,
                           temperature=0.0)
    llm = LLM("gateway", {"default": settings, "gateway": settings})
    yield llm
    LLM._instances.clear()
    LLM._instances.update(saved)


def test_openmanus_agent_steps_through_the_gateway(stock_llm: LLM) -> None:
    assert type(stock_llm) is LLM and str(stock_llm.client.base_url).startswith("http://127")
    agent = echo_agent(llm=stock_llm)

    asyncio.run(agent.run("Please echo 'hello' back to me."))

    assert echo_tool(agent).calls == ["hello"]
    tools = [m for m in agent.memory.messages if m.role == "tool"]
    assert [m.name for m in tools] == ["echo", "terminate"] and "HELLO" in tools[0].content


def test_openmanus_ask_streams_and_not(stock_llm: LLM) -> None:
    async def both() -> tuple[str, str]:
        messages = [{"role": "user", "content": "Say something."}]
        return (await stock_llm.ask(messages, stream=True),
                await stock_llm.ask(messages, stream=False))

    streamed, plain = asyncio.run(both())
    assert streamed and streamed == plain  # the simulator is deterministic
