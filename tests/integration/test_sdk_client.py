"""`producers.sdk`: the SDK's documented examples with only the import line changed.

Each example is a function of the module it imports as `lms`; it runs once with
`from producers import sdk as lms` (real Redis, real `celery -A workers worker` processes,
the simulator behind them) and once with `import lmstudio as lms` straight at the simulator.
The simulator's deterministic engine makes the same prompt give the same text, so the two
runs must agree on content, on the SDK types returned, and on the order of the callbacks.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import lmstudio
import pytest

from producers import InvalidJobError, JobExpiredError, ModelNotServedError, sdk
from producers.local_pool import LocalPool
from producers.redis_server import RedisServer
from tests.support.pool import pool_on_database
from tests.support.wait import wait_until

CHAT = "llama-3.2-1b-instruct"
EMBED = "text-embedding-nomic-embed-text-v1.5"
CONFIG = {"temperature": 0.6, "maxTokens": 50}

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, sim: object) -> Iterator[LocalPool]:
    with pool_on_database(redis_server, sim, 9, [CHAT, EMBED]) as started:
        yield started


@pytest.fixture(autouse=True)
def fresh_sim(sim: object) -> Iterator[None]:
    sim.admin.reset()  # type: ignore[attr-defined]
    sim.admin.set_timing(decode_tokens_per_s=400.0)  # type: ignore[attr-defined]
    yield
    sim.admin.reset()  # type: ignore[attr-defined]


@pytest.fixture()
def both(pool: LocalPool, sim: object) -> Iterator[Callable[[Callable[[ModuleType], Any]],
                                                           tuple[Any, Any]]]:
    """Run an example with the pool's `lms`, then with `lmstudio` at the simulator."""
    def run(example: Callable[[ModuleType], Any]) -> tuple[Any, Any]:
        sdk.reset_default_client()
        lmstudio.sync_api._reset_default_client()
        sdk.configure_default_client(pool.settings)
        lmstudio.configure_default_client(sim.host)  # type: ignore[attr-defined]
        return example(sdk), example(lmstudio)

    yield run
    sdk.reset_default_client()
    lmstudio.sync_api._reset_default_client()


def test_respond_returns_the_sdks_result_with_the_same_content(both: Any) -> None:
    def example(lms: ModuleType) -> Any:
        model = lms.llm(CHAT)
        return model.respond("What is the meaning of life?", config={"maxTokens": 40})

    pooled, direct = both(example)
    assert type(pooled) is lmstudio.PredictionResult
    assert pooled.content == direct.content and pooled.content
    assert pooled.parsed is pooled.content and not pooled.structured
    assert isinstance(pooled.stats, lmstudio.LlmPredictionStats)
    assert pooled.stats.stop_reason == direct.stats.stop_reason
    assert pooled.stats.predicted_tokens_count == direct.stats.predicted_tokens_count
    assert pooled.stats.time_to_first_token_sec is not None
    assert isinstance(pooled.model_info, lmstudio.LlmInfo) and pooled.model_info.model_key == CHAT
    assert pooled.prediction_config.max_tokens == 40
    assert isinstance(pooled.load_config, lmstudio.LlmLoadModelConfig)
    for field in ("path", "size_bytes", "vision", "trained_for_tool_use", "max_context_length",
                  "architecture", "format"):  # what LM Studio told the worker
        assert getattr(pooled.model_info, field) == getattr(direct.model_info, field), field
    assert pooled.load_config.context_length == direct.load_config.context_length


def test_respond_stream_with_the_sdks_config_keys(both: Any) -> None:
    def example(lms: ModuleType) -> tuple[list[Any], Any]:
        chat = lms.Chat("You are a terse assistant.")
        chat.add_user_message("Tell me a story about a queue.")
        stream = lms.llm(CHAT).respond_stream(chat, config=CONFIG)
        fragments = [fragment for fragment in stream]
        return fragments, stream.result()

    (pooled, pooled_result), (direct, direct_result) = both(example)
    assert all(type(f) is lmstudio.LlmPredictionFragment for f in pooled)
    assert "".join(f.content for f in pooled) == pooled_result.content == direct_result.content
    assert pooled_result.stats.predicted_tokens_count == direct_result.stats.predicted_tokens_count
    assert pooled_result.stats.predicted_tokens_count <= 50


def _callback_order(lms: ModuleType) -> tuple[list[str], Any]:
    events: list[str] = []
    result = lms.llm(CHAT).respond(
        "Count the callbacks", config={"maxTokens": 30},
        on_prompt_processing_progress=lambda p: events.append(f"progress {p:g}"),
        on_first_token=lambda: events.append("first token"),
        on_prediction_fragment=lambda f: events.append("fragment"),
        on_message=lambda m: events.append(f"message {type(m).__name__} {m.content[0].text}"))
    squeezed = [e for i, e in enumerate(events) if not (e == "fragment" and events[i - 1] == e)]
    # intermediate progress values depend on timing; the SDK's guarantees are 0, 1, order
    return [e for e in squeezed if e in {"progress 0", "progress 1"}
            or not e.startswith("progress")], result


def test_the_four_callbacks_fire_here_in_the_sdks_order(both: Any) -> None:
    (pooled, result), (direct, _) = both(_callback_order)
    assert pooled == direct
    assert pooled == ["progress 0", "progress 1", "first token", "fragment",
                      f"message AssistantResponse {result.content}"]


class Book(lmstudio.BaseModel):
    title: str
    year: int


def test_structured_output_and_the_sdks_other_config_keys(both: Any) -> None:
    def example(lms: ModuleType) -> tuple[Any, Any]:
        model = lms.llm(CHAT)
        book = model.respond("Tell me about a book", response_format=Book,
                             config={"maxTokens": 60})
        tuned = model.respond("Hello there", config={"repeatPenalty": 1.1, "minPSampling": 0.05,
                                                     "topKSampling": 20, "maxTokens": 20})
        return book, tuned

    (pooled_book, pooled_tuned), (direct_book, direct_tuned) = both(example)
    assert pooled_book.structured and isinstance(pooled_book.parsed, dict)
    assert pooled_book.parsed == direct_book.parsed and set(pooled_book.parsed) >= {"title"}
    assert pooled_book.prediction_config.structured.type == "json"
    assert pooled_tuned.content == direct_tuned.content
    assert pooled_tuned.prediction_config.repeat_penalty == 1.1


def test_chat_from_history_and_a_multi_turn_conversation(both: Any) -> None:
    def example(lms: ModuleType) -> list[str]:
        model = lms.llm(CHAT)
        chat = lms.Chat.from_history({"messages": [
            {"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": "Name a colour."}]})
        replies = []
        for follow_up in ("And another one?", "Which do you prefer?"):
            result = model.respond(chat, config={"maxTokens": 20})
            chat.add_assistant_response(result)
            chat.add_user_message(follow_up)
            replies.append(result.content)
        replies.append(model.respond(chat, config={"maxTokens": 20}).content)
        return replies

    pooled, direct = both(example)
    assert pooled == direct and len(set(pooled)) == 3


def test_complete_and_complete_stream(both: Any) -> None:
    def example(lms: ModuleType) -> tuple[str, str]:
        model = lms.llm(CHAT)
        done = model.complete("The sky is", config={"maxTokens": 16})
        streamed = "".join(f.content for f in model.complete_stream("Once upon a time",
                                                                     config={"maxTokens": 16}))
        return done.content, streamed

    pooled, direct = both(example)
    assert pooled == direct and all(pooled)


def test_embeddings(both: Any) -> None:
    def example(lms: ModuleType) -> tuple[Any, Any]:
        model = lms.embedding_model(EMBED)
        return model.embed(["a", "b"]), model.embed("one text")

    (pooled_two, pooled_one), (direct_two, direct_one) = both(example)
    assert len(pooled_two) == 2 and list(pooled_two[0]) == pytest.approx(list(direct_two[0]))
    assert list(pooled_two[1]) == pytest.approx(list(direct_two[1]))
    assert list(pooled_one) == pytest.approx(list(direct_one)) and len(pooled_one) > 1


def multiply(a: float, b: float) -> float:
    """Given two numbers a and b. Returns the product of them."""
    CALLED.append((os.getpid(), "multiply"))
    return a * b


def divide(a: float, b: float) -> float:
    """Given two numbers a and b. Returns a divided by b."""
    CALLED.append((os.getpid(), "divide"))
    return a / b


CALLED: list[tuple[int, str]] = []


def test_act_with_two_tools_runs_the_tools_here(both: Any) -> None:
    def example(lms: ModuleType) -> tuple[Any, list[str], list[str]]:
        chat = lms.Chat("You are a calculator.")
        chat.add_user_message("Please multiply 12 by 7")
        rounds: list[str] = []
        result = lms.llm(CHAT).act(
            chat, [multiply, divide], on_message=chat.append, max_prediction_rounds=5,
            on_round_start=lambda i: rounds.append(f"start {i}"),
            on_prediction_completed=lambda r: rounds.append(f"done {r.round_index}"),
            on_round_end=lambda i: rounds.append(f"end {i}"))
        return result, [str(m) for m in chat._messages], rounds

    CALLED.clear()
    (pooled, pooled_chat, pooled_rounds), (direct, direct_chat, direct_rounds) = both(example)
    assert type(pooled) is lmstudio.ActResult and pooled.rounds == direct.rounds == 2
    assert [name for _, name in CALLED] == ["multiply", "multiply"]  # pool, then direct
    assert CALLED[0][0] == os.getpid()  # the pool's round ran the tool in this process
    assert pooled_rounds == direct_rounds == ["start 0", "done 0", "end 0",
                                              "start 1", "done 1", "end 1"]
    assert [_without_ids(m) for m in pooled_chat] == [_without_ids(m) for m in direct_chat]
    assert "84" in pooled_chat[-1]


def _without_ids(message: str) -> str:
    """Tool call ids are random per server run; everything else must match."""
    import re

    return re.sub(r'"(id|toolCallId)": "[^"]*"', r'"\1": "-"', message)


def test_cancel_keeps_the_partial_result_with_user_stopped(pool: LocalPool, sim: Any) -> None:
    sim.admin.set_timing(decode_tokens_per_s=20.0)
    sdk.reset_default_client()
    sdk.configure_default_client(pool.settings)
    stream = sdk.llm(CHAT).respond_stream("A very long story please", config={"maxTokens": 400})
    seen = []
    for fragment in stream:
        seen.append(fragment.content)
        if len(seen) == 1:
            stream.cancel()
    result = stream.result()
    assert result.stats.stop_reason == "userStopped"
    assert result.content.startswith(seen[0]) and len(result.content) > 0
    assert result.stats.predicted_tokens_count < 400
    assert pool.queue.handle(stream.job_id).status() == "REVOKED"
    assert sim.admin.log(type="channelSend:cancel")


def test_client_context_manager_and_async_client(pool: LocalPool, sim: Any) -> None:
    with sdk.Client(pool.settings) as client:
        pooled = client.llm.model(CHAT).respond("Hello scoped client", config={"maxTokens": 12})
    with lmstudio.Client(sim.host) as client:
        direct = client.llm.model(CHAT).respond("Hello scoped client", config={"maxTokens": 12})
    assert pooled.content == direct.content

    async def scripted(lms: ModuleType, target: Any) -> tuple[str, str, int, list[float]]:
        async with lms.AsyncClient(target) as client:
            model = await client.llm.model(CHAT)
            answer = await model.respond("Hello async", config={"maxTokens": 12})
            stream = await model.respond_stream("Stream async", config={"maxTokens": 12})
            streamed = "".join([fragment.content async for fragment in stream])
            assert streamed == stream.result().content
            chat = lms.Chat()
            chat.add_user_message("Please divide 84 by 7")
            acted = await model.act(chat, [multiply, divide], on_message=chat.append)
            assert "12" in str(chat._messages[-1])
            embedder = await client.embedding.model(EMBED)
            vector = await embedder.embed("async text")
            return answer.content, streamed, acted.rounds, [round(x, 5) for x in vector]

    assert asyncio.run(scripted(sdk, pool.settings)) == asyncio.run(scripted(lmstudio,
                                                                             sim.host))


def test_cancelling_act_cancels_the_running_round(pool: LocalPool, sim: Any) -> None:
    sim.admin.set_timing(decode_tokens_per_s=20.0)

    class Stop(BaseException):
        """Not an Exception: the SDK (and we) let it end the prediction."""

    def stop_in_round_one(fragment: Any, round_index: int) -> None:
        if round_index == 1:
            raise Stop

    with sdk.Client(pool.settings) as client:
        chat = sdk.Chat()
        chat.add_user_message("Please multiply 3 by 4 and tell me a long story")
        with pytest.raises(Stop):
            client.llm.model(CHAT).act(chat, [multiply, divide],
                                       on_prediction_fragment=stop_in_round_one,
                                       config={"maxTokens": 400})
    wait_until(lambda: sim.admin.log(type="channelSend:cancel"), timeout=30,
               message="the round's prediction cancelled in LM Studio")


def test_sdk_errors_where_the_sdk_raises_them(pool: LocalPool) -> None:
    queued_before = len(list(pool.queue.store_client.scan_iter(match="lmq:job:*")))
    with sdk.Client(pool.settings) as client:
        with pytest.raises(lmstudio.LMStudioModelNotFoundError) as missing:
            client.llm.model("no-such-model")
        assert isinstance(missing.value, ModelNotServedError) and CHAT in str(missing.value)
        model = client.llm.model(CHAT)
        with pytest.raises(lmstudio.LMStudioValueError) as typo:
            model.respond_stream("hi", config={"maxTokenz": 5})
        assert isinstance(typo.value, InvalidJobError) and "'maxTokenz'" in str(typo.value)
        with pytest.raises(lmstudio.LMStudioValueError, match="temperature"):
            model.respond("hi", config={"temperature": "hot"})
        with pytest.raises(lmstudio.LMStudioValueError, match=f"name the LLM.*{CHAT}"):
            client.llm.model()
        too_long = "x" * (pool.settings.max_prompt_chars + 1)
        with pytest.raises(lmstudio.LMStudioValueError, match="LMQ_MAX_PROMPT_CHARS"):
            model.respond(too_long)
    assert len(list(pool.queue.store_client.scan_iter(match="lmq:job:*"))) == queued_before
    with pytest.raises(lmstudio.LMStudioWebsocketError, match="LMQ_BROKER_URL") as down, \
            sdk.Client("redis://127.0.0.1:1/0") as unreachable:
        unreachable.llm.model(CHAT)
    assert isinstance(down.value, ConnectionError)


def test_async_cancel_and_a_cancelled_task_cancel_their_jobs(pool: LocalPool, sim: Any) -> None:
    sim.admin.set_timing(decode_tokens_per_s=20.0)

    async def scripted() -> tuple[Any, list[str]]:
        async with sdk.AsyncClient(pool.settings) as client:
            model = await client.llm.model(CHAT)
            events: list[str] = []
            stream = await model.respond_stream(
                "A very long story please", config={"maxTokens": 400},
                on_first_token=lambda: events.append("first token"),
                on_message=lambda m: events.append("message"))
            async for _fragment in stream:
                await stream.cancel()
            cancelled = stream.result()
            sim.admin.clear_log()
            task = asyncio.create_task(model.respond("Another long story",
                                                     config={"maxTokens": 400}))
            await asyncio.to_thread(wait_until, lambda: sim.admin.log(
                type="channelSend:fragment"), 30, 0.02, "the second job generating")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return cancelled, events

    cancelled, events = asyncio.run(scripted())
    assert cancelled.stats.stop_reason == "userStopped" and cancelled.content
    assert events == ["first token", "message"]
    wait_until(lambda: sim.admin.log(type="channelSend:cancel"), timeout=30,
               message="the cancelled task's prediction cancelled in LM Studio")


def test_threads_share_one_default_client(both: Any) -> None:
    """Scripts drive the sync SDK from a thread pool; so they can through the pool."""
    from concurrent.futures import ThreadPoolExecutor

    def example(lms: ModuleType) -> list[str]:
        model = lms.llm(CHAT)
        with ThreadPoolExecutor(6) as threads:
            return list(threads.map(lambda i: model.respond(
                f"Question number {i}", config={"maxTokens": 12}).content, range(12)))

    pooled, direct = both(example)
    assert pooled == direct and len(set(pooled)) == 12


def test_client_deadlines_time_limit_and_expiry(pool: LocalPool, sim: Any) -> None:
    """`Client(time_limit_s=, expires_s=)`: every job of the client carries them. A
    prediction past its time limit ends with the partial result (userStopped); a job the
    busy pool did not start in time raises the SDK's prediction error (also the pool's
    JobExpiredError) and never runs."""
    sim.admin.set_timing(decode_tokens_per_s=20.0)
    sim.admin.set_faults(reply_tokens=400)  # 20 s without the limit
    with sdk.Client(pool.settings, time_limit_s=1) as client:
        stream = client.llm.model(CHAT).respond_stream("A long story", config={"maxTokens": 400})
        cut = stream.wait_for_result()
    assert cut.stats.stop_reason == "userStopped" and cut.content
    assert cut.stats.predicted_tokens_count < 400
    assert pool.queue.handle(stream.job_id).status() == "REVOKED"

    # Every thread of the one chat worker busy (slots + prefetch threads): the next job waits.
    threads = int(pool.env.get("LMQ_SLOTS", "4")) + 2
    blockers = [pool.queue.chat(CHAT, f"blocker {n}", config={"maxTokens": 400})
                for n in range(threads)]
    wait_until(lambda: all(b.status() in ("STARTED", "PROGRESS") for b in blockers),
               timeout=60, message="every worker thread holding a job")
    marker = f"sdk-expires-{uuid.uuid4().hex[:8]}"
    with sdk.Client(pool.settings, expires_s=1) as client, \
            pytest.raises(lmstudio.LMStudioPredictionError, match="expires_s") as caught:
        client.llm.model(CHAT).respond(marker, config={"maxTokens": 5})
    assert isinstance(caught.value, JobExpiredError)
    for blocker in blockers:
        blocker.cancel()
    after = pool.queue.chat(CHAT, "after the blockers", config={"maxTokens": 2})
    assert after.result(timeout=60).content  # taken after the expired job's message
    assert not [e for e in sim.admin.log(type="channelCreate") if marker in json.dumps(e["msg"])]
    with pytest.raises(lmstudio.LMStudioValueError, match="expires_s"):
        sdk.Client(pool.settings, expires_s=0)
