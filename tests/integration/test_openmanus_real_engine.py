"""OpenManus' real ToolCallAgent through the pool on the simulator's real engine (issue 10):
real Redis, a real `celery -A workers worker` process, SmolLM2-135M running in llama.cpp
inside `python -m simulator` (config `engine = "real"`).

A 135M model cannot call tools reliably, so the real engine applies its documented rule
(simulator/README.md, "Documented fallbacks"): when the request has tools and the last
message is the user's, the call is the first tool named in the user's text (string
arguments from quoted strings); when no tool is named, or after a tool result, the real
model answers in text. These tests check both halves. Replies are capped at MAX_TOKENS, so
the module runs in well under a minute once the simulator and worker are up."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest

from tests.support.openmanus import require_openmanus

require_openmanus()

from app.llm import LLM  # noqa: E402

from producers.local_pool import LocalPool, local_pool  # noqa: E402
from producers.openmanus import CallRecord, use_lmstudio  # noqa: E402
from producers.openmanus.example_agent import echo_agent, echo_tool  # noqa: E402
from producers.redis_server import RedisServer  # noqa: E402
from simulator.real_models import LLM_KEY, missing_reason  # noqa: E402
from simulator.textgen import WORDS  # noqa: E402
from tests.support.services import missing_service  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def real_sim() -> Iterator[object]:
    reason = missing_reason()
    if reason:
        missing_service(f"the real engine: {reason}")
    from simulator.testing import running_simulator

    with running_simulator({"engine": "real", "real": {"threads": 1}},
                           in_process=False) as running:
        yield running


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, real_sim: object) -> Iterator[LocalPool]:
    url = redis_server.url.rsplit("/", 1)[0] + "/12"  # a database no other module uses
    with local_pool(url, real_sim.host, [LLM_KEY]) as started:  # type: ignore[attr-defined]
        yield started


@pytest.fixture()
def calls(pool: LocalPool) -> Iterator[list[CallRecord]]:
    """The queued provider registered for LLM_KEY; yields its calls' records."""
    saved = dict(LLM._instances)
    seen: list[CallRecord] = []
    provider = use_lmstudio(LLM_KEY, queued=True, settings=pool.settings,
                            max_tokens=MAX_TOKENS, on_stats=seen.append)
    provider.echo_stream = False
    yield seen
    provider.close()
    LLM._instances.clear()
    LLM._instances.update(saved)


def assert_real_text(record: CallRecord) -> None:
    """The call was answered in text by the model (not a tool call, not synthetic words)."""
    stats = record.stats
    assert stats.stop_reason in ("eosFound", "maxPredictedTokensReached"), stats
    assert 0 < stats.predicted_tokens_count <= MAX_TOKENS
    assert stats.tokens_per_second and stats.time_to_first_token_s


def not_synthetic(text: str) -> bool:
    """The deterministic engine writes only words of its fixed vocabulary."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    return bool(words - set(WORDS))


def test_agent_step_gets_real_text_when_no_tool_is_named(
        pool: LocalPool, calls: list[CallRecord]) -> None:
    agent = echo_agent(max_steps=1, next_step_prompt="")  # the default prompt names a tool

    summary = asyncio.run(agent.run("What color is the sky on a clear day?"))

    assert len(calls) == 1 and calls[0].job_id
    assert_real_text(calls[0])
    answer = agent.memory.messages[-1]
    assert answer.role == "assistant" and not answer.tool_calls
    assert answer.content and answer.content.strip() and not_synthetic(answer.content)
    assert summary.startswith(f"Step 1: {answer.content}\n")  # the step's result: the text
    assert echo_tool(agent).calls == []


def test_agent_tool_call_follows_the_documented_rule_then_real_text(
        pool: LocalPool, calls: list[CallRecord]) -> None:
    agent = echo_agent(max_steps=2, next_step_prompt="")  # step 2 answers the tool result

    asyncio.run(agent.run("Please echo 'hello' back to me."))

    # Step 1: the rule, not the model, chose the call: the first tool named in the user's
    # text, with the quoted string as its string argument.
    assert calls[0].stats.stop_reason == "toolCalls"
    assert echo_tool(agent).calls == ["hello"]
    tool = next(m for m in agent.memory.messages if m.role == "tool")
    assert tool.name == "echo" and "HELLO" in (tool.content or "")
    # Step 2: after the tool result, the real model writes the answer.
    assert len(calls) == 2
    assert_real_text(calls[1])
    answer = agent.memory.messages[-1]
    assert answer.role == "assistant" and not answer.tool_calls and answer.content.strip()
    # The deterministic engine would have said "The result of echo is ...".
    assert not answer.content.startswith("The result of echo is")
    assert not_synthetic(answer.content)
