"""OpenManus' real ToolCallAgent on the queued provider: real Redis, a real
`celery -A workers worker` process, the simulator as LM Studio."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

from tests.support.openmanus import require_openmanus

require_openmanus()

from app.llm import LLM  # noqa: E402
from app.schema import Memory  # noqa: E402

from producers.openmanus import (  # noqa: E402
    TokenLimitError,
    TokenLimitExceeded,
    collect_step,
    finish_step,
    step_ready,
    submit_step,
    use_lmstudio,
)
from producers.openmanus._base import Request  # noqa: E402
from producers.openmanus.example_agent import echo_agent, echo_tool  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402
from workers.error import (  # noqa: E402
    ContextOverflowError,
    JobExpiredError,
    JobTimeoutError,
    ModelNotServedError,
)
from workers.settings import Settings  # noqa: E402

MODEL = "llama-3.2-1b-instruct"
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def clean_registry():
    saved = dict(LLM._instances)
    yield
    for provider in LLM._instances.values():
        if provider not in saved.values() and hasattr(provider, "close"):
            provider.close()
    LLM._instances.clear()
    LLM._instances.update(saved)


@pytest.fixture()
def pool(lmq_env, worker_factory, simulator):
    """One real worker for MODEL; yields the settings a producer uses."""
    worker_factory(MODEL, lmq_env)
    return Settings(broker_url=lmq_env["LMQ_BROKER_URL"],
                    result_backend=lmq_env["LMQ_RESULT_BACKEND"],
                    lmstudio_host=lmq_env["LMQ_LMSTUDIO_HOST"])


def predict_channels(sim) -> list[dict]:
    return [c for c in sim.admin.channels() if c["endpoint"] == "predict"]


def test_agent_runs_through_the_pool(pool) -> None:
    seen = []
    provider = use_lmstudio(MODEL, queued=True, settings=pool, on_stats=seen.append)
    agent = echo_agent()

    asyncio.run(agent.run("Please echo 'hello' back to me."))

    assert echo_tool(agent).calls == ["hello"]
    tools = [m for m in agent.memory.messages if m.role == "tool"]
    assert [m.name for m in tools] == ["echo", "terminate"] and "HELLO" in tools[0].content
    assert len(seen) == 2 and all(r.job_id and r.stats for r in seen)
    assert len({r.job_id for r in seen}) == 2
    assert provider.last_stats == seen[-1].stats
    assert provider.last_stats.stop_reason == "toolCalls"
    assert provider.total_input_tokens == sum(r.stats.prompt_tokens_count for r in seen)


def test_ten_agents_make_progress_together(pool, simulator) -> None:
    simulator.admin.set_timing(decode_tokens_per_s=50)
    provider = use_lmstudio(MODEL, queued=True, settings=pool)
    agents = [echo_agent() for _ in range(10)]

    async def run_all() -> None:
        await asyncio.gather(*(agent.run(f"Please echo 'agent {i}'.")
                               for i, agent in enumerate(agents)))

    asyncio.run(run_all())

    for i, agent in enumerate(agents):
        assert echo_tool(agent).calls == [f"agent {i}"]
        assert [m.name for m in agent.memory.messages if m.role == "tool"][-1] == "terminate"
    assert len(provider.stats_log) == 20
    channels = predict_channels(simulator)
    assert len(channels) == 20
    overlapping = max(sum(1 for o in channels if o["created_t"] <= c["created_t"]
                          < (o["closed_t"] or float("inf"))) for c in channels)
    assert overlapping >= 2  # predictions of different agents ran at the same time


def test_cancelling_an_agent_mid_step_cancels_the_prediction(pool, simulator) -> None:
    simulator.admin.set_timing(decode_tokens_per_s=10)
    simulator.admin.set_faults(reply_tokens=2000)
    use_lmstudio(MODEL, queued=True, settings=pool)
    agent = echo_agent(next_step_prompt="Go on.")  # the default prompt names `terminate`

    async def run_then_cancel() -> None:
        task = asyncio.create_task(agent.run("Tell me a long story."))
        await asyncio.to_thread(wait_until, lambda: any(
            c["fragments"] for c in predict_channels(simulator)), 60, 0.02, "generation")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_then_cancel())
    wait_until(lambda: simulator.admin.log(type="channelSend:cancel"), timeout=30,
               message="a cancel at the simulator")
    wait_until(lambda: predict_channels(simulator)[0]["stop_reason"] == "userStopped",
               timeout=30, message="the prediction stopped by the user")


def test_per_call_timeout_revokes_the_job(pool, simulator) -> None:
    simulator.admin.set_timing(decode_tokens_per_s=10)
    simulator.admin.set_faults(reply_tokens=2000)
    provider = use_lmstudio(MODEL, queued=True, settings=pool, timeout_s=1.5)

    with pytest.raises(JobTimeoutError):
        asyncio.run(provider.ask([{"role": "user", "content": "Tell me a long story."}]))
    wait_until(lambda: simulator.admin.log(type="channelSend:cancel"), timeout=30,
               message="a cancel at the simulator")


def test_context_overflow_is_a_token_limit(pool) -> None:
    use_lmstudio(MODEL, queued=True, settings=pool)
    with pytest.raises(TokenLimitError) as info:
        asyncio.run(echo_agent().run("word " * 5000))
    assert isinstance(info.value.__cause__, TokenLimitExceeded)
    assert isinstance(info.value.__cause__.__cause__, ContextOverflowError)


def test_model_not_served_is_a_clear_error(redis_url, simulator) -> None:
    settings = Settings(broker_url=redis_url, result_backend=redis_url,
                        lmstudio_host=simulator.host)
    use_lmstudio("qwen2.5-7b-instruct", queued=True, settings=settings)
    with pytest.raises(ModelNotServedError, match="qwen2.5-7b-instruct"):
        asyncio.run(echo_agent().run("Please echo 'x'."))


COLLECT = textwrap.dedent("""
    import asyncio, sys
    from producers.openmanus import collect_step, use_lmstudio
    from workers.settings import Settings
    settings = Settings(broker_url=sys.argv[2], result_backend=sys.argv[2])
    use_lmstudio("llama-3.2-1b-instruct", queued=True, settings=settings)
    message = asyncio.run(collect_step(sys.argv[1], timeout=60))
    print(message.model_dump_json())
""")


def test_background_step_survives_a_restart(pool) -> None:
    use_lmstudio(MODEL, queued=True, settings=pool)
    agent = echo_agent()
    agent.update_memory("user", "Please echo 'later' back to me.")

    job_id = asyncio.run(submit_step(agent))
    saved_memory = agent.memory.model_dump_json()
    assert isinstance(job_id, str) and len(agent.memory.messages) == 1  # agent untouched

    # "restart": a fresh process collects the step by its id alone
    done = subprocess.run([sys.executable, "-c", COLLECT, job_id, pool.broker_url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    assert reply["tool_calls"][0]["function"]["name"] == "echo"
    assert step_ready(job_id)

    # a rebuilt agent resumes from the saved memory and the collected reply
    from openai.types.chat import ChatCompletionMessage

    resumed = echo_agent()
    resumed.memory = Memory.model_validate_json(saved_memory)
    result = asyncio.run(finish_step(resumed, ChatCompletionMessage.model_validate(reply)))
    assert "LATER" in result and echo_tool(resumed).calls == ["later"]
    asyncio.run(resumed.run())  # and it carries on to `terminate` as usual
    assert [m.name for m in resumed.memory.messages if m.role == "tool"] == ["echo", "terminate"]


def test_collect_step_in_process(pool) -> None:
    provider = use_lmstudio(MODEL, queued=True, settings=pool)
    agent = echo_agent()
    agent.update_memory("user", "Please echo 'now'.")

    async def submit_and_collect():
        job_id = await submit_step(agent)
        return job_id, await collect_step(job_id, timeout=60)

    job_id, message = asyncio.run(submit_and_collect())
    assert message.tool_calls[0].function.name == "echo"
    assert provider.last_call.job_id == job_id


def test_a_step_no_worker_starts_in_time_expires(redis_url, simulator) -> None:
    """`expires_s=` on the queued provider goes on every call's job: with no worker alive the
    awaiting agent gets JobExpiredError soon after the deadline instead of waiting for ever."""
    settings = Settings(broker_url=redis_url, result_backend=redis_url,
                        lmstudio_host=simulator.host)
    provider = use_lmstudio(MODEL, queued=True, settings=settings, enqueue_anyway=True,
                            expires_s=1, time_limit_s=30)
    request = Request(messages=[{"role": "user", "content": "hi"}], tools=None,
                      force_tool=False, temperature=0.5, max_tokens=8, timeout_s=None)
    job_id = asyncio.run(provider.asubmit(request))
    record = provider.queue.job_record(job_id)
    assert record["expires_s"] == 1 and record["priority"] == "high"
    with pytest.raises(JobExpiredError, match="expires_s"):
        asyncio.run(provider.acollect(job_id, timeout_s=30))


WEATHER_TOOL = {"type": "function", "function": {
    "name": "weather", "description": "Weather forecast for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.mark.parametrize("force", [True, False])
def test_required_tool_choice_forces_a_tool_call(pool, force) -> None:
    """tool_choice "required" goes to LM Studio as rawTools with force (the gateway's
    mapping), so the model calls a tool even for a prompt it would answer in text; "auto"
    leaves that to the model (here: no call)."""
    provider = use_lmstudio(MODEL, queued=True, settings=pool)
    request = Request(messages=[{"role": "user", "content": "Say hello."}],
                      tools=[WEATHER_TOOL], force_tool=force, temperature=0.5,
                      max_tokens=16, timeout_s=None)

    async def call():
        job_id = await provider.asubmit(request)
        return job_id, await provider.acollect(job_id, timeout_s=60)

    job_id, reply = asyncio.run(call())
    raw_tools = provider.queue.job_record(job_id).get("config", {}).get("rawTools")
    if force:
        assert raw_tools and raw_tools["force"] is True
        assert [c["function"]["name"] for c in reply.tool_calls] == ["weather"]
    else:
        assert raw_tools is None and not reply.tool_calls
