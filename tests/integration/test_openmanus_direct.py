"""OpenManus' real ToolCallAgent on the direct LM Studio provider, against the simulator."""

from __future__ import annotations

import asyncio
import base64
import socket

import pytest

from tests.support.openmanus import require_openmanus

require_openmanus()

from app.llm import LLM  # noqa: E402

from producers.openmanus import TokenLimitError, TokenLimitExceeded, use_lmstudio  # noqa: E402
from producers.openmanus.example_agent import echo_agent, echo_tool  # noqa: E402
from workers.error import (  # noqa: E402
    ContextOverflowError,
    JobTimeoutError,
    LMStudioUnavailableError,
    ModelNotAvailableError,
)
from workers.settings import Settings  # noqa: E402

MODEL = "llama-3.2-1b-instruct"
# 1x1 transparent PNG
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)).decode()


@pytest.fixture(autouse=True)
def clean_registry():
    saved = dict(LLM._instances)
    yield
    for provider in LLM._instances.values():
        if provider not in saved.values() and hasattr(provider, "close"):
            provider.close()
    LLM._instances.clear()
    LLM._instances.update(saved)


def provider_for(sim, model: str = MODEL, **options):
    return use_lmstudio(model, settings=Settings(lmstudio_host=sim.host), **options)


def predict_channels(sim) -> list[dict]:
    return [c for c in sim.admin.channels() if c["endpoint"] == "predict"]


def test_tool_call_agent_calls_the_tool_and_terminates(simulator) -> None:
    provider = provider_for(simulator)
    agent = echo_agent()
    assert agent.llm is provider

    summary = asyncio.run(agent.run("Please echo 'hello' back to me."))

    assert echo_tool(agent).calls == ["hello"]
    tool_messages = [m for m in agent.memory.messages if m.role == "tool"]
    assert [m.name for m in tool_messages] == ["echo", "terminate"]
    assert "HELLO" in tool_messages[0].content
    assert agent.current_step == 2, summary
    assert provider.last_stats is not None and provider.last_stats.stop_reason == "toolCalls"
    assert provider.total_input_tokens > 0 and len(provider.stats_log) == 2


def test_ask_streaming_and_not(simulator, capsys) -> None:
    provider = provider_for(simulator)

    async def both() -> tuple[str, str]:
        streamed = await provider.ask([{"role": "user", "content": "Say something."}])
        plain = await provider.ask([{"role": "user", "content": "Say something."}],
                                   stream=False)
        return streamed, plain

    streamed, plain = asyncio.run(both())
    assert streamed and streamed == plain  # the simulator is deterministic
    assert streamed in capsys.readouterr().out  # upstream echoes streamed text


def test_ask_with_images_uploads_them() -> None:
    """To a vision model: LM Studio refuses an image for a model without vision."""
    from tests.support.vision import VISION, simulator_with_vision

    with simulator_with_vision() as simulator:
        _ask_with_images(simulator, provider_for(simulator, VISION))


def _ask_with_images(simulator, provider) -> None:  # type: ignore[no-untyped-def]
    text = asyncio.run(provider.ask_with_images(
        [{"role": "user", "content": "What is in the picture?"}],
        images=[f"data:image/png;base64,{PNG}"]))
    assert text
    uploads = simulator.admin.log(type="rpcCall")
    assert any(e["msg"].get("endpoint") == "uploadFileBase64" for e in uploads)


def test_token_counting_goes_to_lm_studio(simulator) -> None:
    provider = provider_for(simulator)
    assert provider.count_tokens("hello brave new world") == 4  # the simulator's tokenizer
    assert provider.tokenizer.encode("a b") and provider.count_message_tokens(
        [{"role": "user", "content": "a b"}]) == 2 + 4 + 2


def test_context_overflow_is_a_token_limit_and_not_retried(simulator) -> None:
    provider = provider_for(simulator)
    agent = echo_agent()
    huge = "word " * 5000  # the simulator's default context is 4096 tokens

    with pytest.raises(TokenLimitError) as info:
        asyncio.run(agent.run(huge))

    assert isinstance(info.value.__cause__, TokenLimitExceeded)
    assert isinstance(info.value.__cause__.__cause__, ContextOverflowError)
    assert len(predict_channels(simulator)) == 1  # one attempt, no retry storm
    assert provider.stats_log == type(provider.stats_log)()  # nothing recorded


def test_missing_model_is_a_clear_error(simulator) -> None:
    provider_for(simulator, model="no-such-model")
    with pytest.raises(ModelNotAvailableError, match="no-such-model"):
        asyncio.run(echo_agent().run("Please echo 'x'."))


def test_lm_studio_down_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nobody listens
    use_lmstudio(MODEL, settings=Settings(lmstudio_host=f"127.0.0.1:{port}"))
    with pytest.raises(LMStudioUnavailableError, match="not reachable"):
        asyncio.run(echo_agent().run("Please echo 'x'."))


def test_cancelling_the_agent_cancels_the_prediction(simulator) -> None:
    simulator.admin.set_timing(decode_tokens_per_s=5, reply_min_tokens=200,
                               reply_max_tokens=200)
    provider_for(simulator)
    agent = echo_agent(next_step_prompt="Go on.")  # the default prompt names `terminate`

    async def run_then_cancel() -> None:
        task = asyncio.create_task(agent.run("Tell me a long story."))  # names no tool
        await asyncio.to_thread(simulator.admin.wait_until,
                                lambda: any(c["fragments"] for c in predict_channels(simulator)))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_then_cancel())
    cancels = simulator.admin.log(type="channelSend:cancel")
    assert len(cancels) == 1
    channel = predict_channels(simulator)[0]
    assert channel["stop_reason"] == "userStopped" and channel["cancel_t"] is not None


def test_event_loop_keeps_running_during_a_prediction(simulator) -> None:
    simulator.admin.set_timing(decode_tokens_per_s=50, reply_min_tokens=20,
                               reply_max_tokens=20)
    provider = provider_for(simulator)

    async def tick_while_asking() -> int:
        ticks = 0
        call = asyncio.create_task(provider.ask([{"role": "user", "content": "Hi"}],
                                                stream=False))
        while not call.done():
            ticks += 1
            await asyncio.sleep(0.01)
        await call
        return ticks

    assert asyncio.run(tick_while_asking()) >= 10  # ~0.4 s of prediction, loop not blocked


def test_per_call_timeout_cancels_the_prediction(simulator) -> None:
    simulator.admin.set_timing(decode_tokens_per_s=10, reply_min_tokens=500,
                               reply_max_tokens=500)
    provider = provider_for(simulator, timeout_s=0.5)
    with pytest.raises(JobTimeoutError, match="did not answer within 0.5s"):
        asyncio.run(provider.ask([{"role": "user", "content": "Hi"}], stream=False))
    assert len(simulator.admin.log(type="channelSend:cancel")) == 1
