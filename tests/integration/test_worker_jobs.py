"""Each job kind end to end: real worker processes, real Redis, the SDK against the simulator."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_worker_support import (
    EMBED,
    LLM,
    client_app,
    final,
    fragment_entries,
    rpc_calls,
    send,
)
from tests.support.wait import wait_until
from workers.contract import (
    PROGRESS,
    ChatJob,
    ChatResult,
    CompletionJob,
    CompletionResult,
    EmbeddingJob,
    EmbeddingResult,
    JobProgress,
)

pytestmark = [pytest.mark.timeout(180)]

ADD_TOOL = {"type": "function", "function": {
    "name": "add", "description": "Add two numbers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                     "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}


@pytest.fixture()
def llm_worker(worker_factory, lmq_env):  # type: ignore[no-untyped-def]
    return worker_factory(LLM, lmq_env)


def test_chat_returns_content_stats_identity_and_timing(llm_worker, redis_url, simulator):  # type: ignore[no-untyped-def]
    app = client_app(redis_url)
    job = ChatJob(model=LLM, system_prompt="You are terse.", config={"max_tokens": 12,
                  "temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop": ["\n\n"]},
                  messages=[{"role": "user", "content": "Say hello"}])
    result = ChatResult.model_validate(final(send(app, job)).get(timeout=5))
    assert result.content and result.stats.predicted_tokens_count == 12
    assert result.stats.stop_reason == "maxPredictedTokensReached"
    assert result.stats.prompt_tokens_count and result.stats.prompt_tokens_count > 0
    assert result.stats.time_to_first_token_s is not None
    assert result.model.model_key == LLM and result.model.context_length == 4096
    assert result.worker == llm_worker.hostname and result.attempt == 1
    assert result.timing.queue_wait_s is not None and result.timing.run_s > 0
    assert result.timing.started_at <= result.timing.finished_at
    create = [e for e in simulator.admin.log(type="channelCreate")
              if e["msg"]["endpoint"] == "predict"][-1]["msg"]["creationParameter"]
    fields = {f["key"]: f["value"] for f in
              create["predictionConfigStack"]["layers"][0]["config"]["fields"]}
    assert fields["llm.prediction.maxPredictedTokens"] == {"checked": True, "value": 12}
    assert fields["llm.prediction.temperature"] == 0.2
    assert fields["llm.prediction.stopStrings"] == ["\n\n"]
    roles = [m["role"] for m in create["history"]["messages"]]
    assert roles == ["system", "user"]


def test_chat_with_tool_history_and_tools_returns_openai_tool_calls(llm_worker, redis_url):  # type: ignore[no-untyped-def]
    app = client_app(redis_url)
    history = [
        {"role": "user", "content": "Please add 1 and 1"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function",
             "function": {"name": "add", "arguments": "{\"a\": 1, \"b\": 1}"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "2"},
        {"role": "assistant", "content": "It is 2."},
        {"role": "user", "content": "Please add 2 and 3"},
    ]
    job = ChatJob(model=LLM, messages=history, tools=[ADD_TOOL])
    result = ChatResult.model_validate(final(send(app, job)).get(timeout=5))
    assert result.tool_calls, result
    call = result.tool_calls[0]
    assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 2, "b": 3}
    assert result.stats.stop_reason == "toolCalls"


def test_structured_output_is_parsed(llm_worker, redis_url):  # type: ignore[no-untyped-def]
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "born": {"type": "integer"}},
              "required": ["name", "born"]}
    job = ChatJob(model=LLM, messages="Describe an author", config={"json_schema": schema})
    result = ChatResult.model_validate(final(send(client_app(redis_url), job)).get(timeout=5))
    assert isinstance(result.parsed, dict) and set(result.parsed) >= {"name", "born"}
    assert json.loads(result.content) == result.parsed


def test_completion(llm_worker, redis_url):  # type: ignore[no-untyped-def]
    job = CompletionJob(model=LLM, prompt="Once upon a time", config={"max_tokens": 8})
    result = CompletionResult.model_validate(final(send(client_app(redis_url), job)).get(5))
    assert result.content and result.stats.predicted_tokens_count == 8
    assert result.stats.prompt_tokens_count and result.stats.prompt_tokens_count > 0


def test_embedding_sends_texts_concurrently(worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker_factory(EMBED, lmq_env)
    simulator.admin.set_faults(delay_s=0.05, delay_endpoints=["embedString"])
    texts = [f"document number {i} about queues" for i in range(24)]
    result = EmbeddingResult.model_validate(
        final(send(client_app(redis_url), EmbeddingJob(model=EMBED, texts=texts))).get(5))
    assert result.completed == 24 and len(result.vectors) == 24 and result.dimension == 768
    assert all(len(v) == 768 for v in result.vectors) and not result.cancelled
    assert len(result.token_counts) == 24 and result.total_tokens == sum(result.token_counts)
    assert _max_in_flight(simulator, "embedString") > 1


def test_progress_state_and_fragment_stream(llm_worker, redis_url, simulator):  # type: ignore[no-untyped-def]
    simulator.admin.set_timing(decode_tokens_per_s=40)
    simulator.admin.set_faults(reply_tokens=60)
    app = client_app(redis_url)
    handle = send(app, ChatJob(model=LLM, messages="Tell me a long story"))
    seen = wait_until(lambda: handle.state == PROGRESS and handle.info.get("tokens_so_far"),
                      timeout=30, message="PROGRESS with tokens")
    progress = JobProgress.model_validate(handle.info)
    assert seen and progress.phase == "generating" and progress.worker == llm_worker.hostname
    assert progress.time_to_first_token_s is not None and progress.prompt_progress == 1.0
    wait_until(lambda: fragment_entries(redis_url, handle.id), timeout=10,
               message="first fragment entry")
    result = ChatResult.model_validate(final(handle).get(timeout=5))
    entries = fragment_entries(redis_url, handle.id)
    assert entries[-1] == {"end": "SUCCESS"}
    assert "".join(e.get("t", "") for e in entries) == result.content
    assert 1 < len(entries) < 60  # batched: fewer entries than tokens
    assert len(rpc_calls(simulator, "countTokens")) >= 1


def test_a_streamed_job_publishes_its_text_as_it_comes_a_batch_job_in_few_pieces(
        llm_worker, redis_url, simulator):  # type: ignore[no-untyped-def]
    simulator.admin.set_timing(decode_tokens_per_s=40)
    simulator.admin.set_faults(reply_tokens=60)  # 1.5 s of text
    app = client_app(redis_url)
    streamed = send(app, ChatJob(model=LLM, messages="Tell me a story"), streamed=True)
    batch = send(app, ChatJob(model=LLM, messages="Tell me a story too"))
    texts = {}
    for name, handle in (("streamed", streamed), ("batch", batch)):
        result = ChatResult.model_validate(final(handle).get(timeout=5))
        entries = fragment_entries(redis_url, handle.id)
        assert "".join(e.get("t", "") for e in entries) == result.content  # all of it
        texts[name] = [e for e in entries if "t" in e]
    assert len(texts["streamed"]) >= 10  # every 50 ms
    assert 1 <= len(texts["batch"]) <= 3  # every second, and the rest with the end entry


def _max_in_flight(sim, endpoint: str) -> int:  # type: ignore[no-untyped-def]
    open_calls, peak = set(), 0
    for entry in sim.admin.log():
        msg = entry["msg"] if isinstance(entry["msg"], dict) else {}
        key = (entry["conn"], msg.get("callId"))
        is_call = msg.get("type") == "rpcCall" and msg.get("endpoint") == endpoint
        if entry["dir"] == "in" and is_call:
            open_calls.add(key)
            peak = max(peak, len(open_calls))
        elif entry["dir"] == "out" and msg.get("type") in ("rpcResult", "rpcError"):
            open_calls.discard(key)
    return peak


def _counted(sim, needle: str) -> int:  # type: ignore[no-untyped-def]
    calls = rpc_calls(sim, "countTokens") + rpc_calls(sim, "applyPromptTemplate")
    return sum(needle in json.dumps(call["msg"]) for call in calls)


def test_short_prompts_skip_the_exact_count_long_ones_and_tools_do_not(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker_factory(LLM, {**lmq_env, "LMQ_LOCAL_COUNT_MAX_TOKENS": "400"})
    app = client_app(redis_url)
    short = ChatJob(model=LLM, messages="short-prompt-1", config={"max_tokens": 4})
    result = ChatResult.model_validate(final(send(app, short)).get(timeout=5))
    assert _counted(simulator, "short-prompt-1") == 0  # bounded locally: no RPC
    assert result.stats.prompt_tokens_count  # the exact figure still comes from LM Studio
    near_limit = ChatJob(model=LLM, messages="long-prompt-2 " + "word " * 100,
                         config={"max_tokens": 4})  # bound over 400 -> exact count
    final(send(app, near_limit)).get(timeout=5)
    assert _counted(simulator, "long-prompt-2") == 2  # template, then count
    tools = ChatJob(model=LLM, messages="tools-prompt-3", tools=[ADD_TOOL],
                    config={"max_tokens": 4})
    final(send(app, tools)).get(timeout=5)
    assert _counted(simulator, "tools-prompt-3") == 2
    completion = CompletionJob(model=LLM, prompt="completion-prompt-4", config={"max_tokens": 4})
    final(send(app, completion)).get(timeout=5)
    assert _counted(simulator, "completion-prompt-4") == 0


def test_prompt_whose_bound_overflows_is_counted_and_fits(worker_factory, lmq_env, redis_url,
                                                         simulator):  # type: ignore[no-untyped-def]
    """Bound + max_tokens over the context: LM Studio's exact count decides (and fits)."""
    worker_factory(LLM, lmq_env)
    app = client_app(redis_url)
    text = "fits-exactly " + "ab " * 300  # ~900 bytes; far fewer tokens
    job = ChatJob(model=LLM, messages=text, config={"max_tokens": 3500})
    result = ChatResult.model_validate(final(send(app, job), 60).get(timeout=5))
    assert _counted(simulator, "fits-exactly") == 2
    assert result.stats.prompt_tokens_count and result.stats.prompt_tokens_count < 596


def test_started_state_comes_before_progress(llm_worker, redis_url, simulator):  # type: ignore[no-untyped-def]
    """STARTED (result_store's one-round-trip start) with Celery's meta, then PROGRESS."""
    simulator.admin.set_timing(decode_tokens_per_s=20)
    simulator.admin.set_faults(reply_tokens=30)
    app = client_app(redis_url)
    handle = send(app, ChatJob(model=LLM, messages="take your time"))
    started: list[dict] = []  # type: ignore[type-arg]

    def progressed() -> bool:
        meta = app.backend.get_task_meta(handle.id, cache=False)
        if meta["status"] == "STARTED":
            started.append(meta)
        return bool(meta["status"] == PROGRESS)

    wait_until(progressed, timeout=30, message="PROGRESS")
    assert started, "no STARTED state seen"
    assert started[0]["result"]["hostname"] == llm_worker.hostname
    assert started[0].get("name") == "lmq.chat"  # extended fields, as Celery writes them
    final(handle, 60)


def test_workers_of_two_models_keep_both_loaded(worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    """Each worker loads its model itself (not a JIT getOrLoad load), so LM Studio's JIT
    Auto-Evict never unloads one worker's model when another worker loads its own."""
    import lmstudio as lms

    with lms.Client(simulator.host) as client:
        client.llm.unload(LLM)
        client.embedding.unload(EMBED)
    worker_factory(LLM, lmq_env)
    worker_factory(EMBED, lmq_env)
    loaded = {inst["modelKey"] for inst in simulator.admin.state()["instances"]}
    assert {LLM, EMBED} <= loaded
    evictions = [e for e in simulator.admin.log()
                 if "unloadingOtherJITModel" in json.dumps(e.get("msg", ""))]
    assert evictions == []
    app = client_app(redis_url)
    assert ChatResult.model_validate(final(send(app, ChatJob(
        model=LLM, messages="hi", config={"max_tokens": 4}))).get(5)).content
    assert EmbeddingResult.model_validate(final(send(app, EmbeddingJob(
        model=EMBED, texts=["a"]))).get(5)).completed == 1


def _big_tool(words: int) -> dict:  # type: ignore[type-arg]
    return {"type": "function", "function": {
        "name": "lookup", "description": "word " * words,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}


@pytest.mark.parametrize("given_as", ["tools", "config.rawTools"])
def test_tools_count_toward_the_context_however_given(llm_worker, redis_url, given_as):  # type: ignore[no-untyped-def]
    """~2,000 tokens of tool definitions + 3,000 output tokens exceed the 4,096 context:
    refused at once, whether the tools are the job's or (a forced tool choice, as the
    gateway sends it) its config's rawTools."""
    from workers.error import ContextOverflowError

    app = client_app(redis_url)
    tool = _big_tool(2000)
    if given_as == "tools":
        job = ChatJob(model=LLM, messages="call lookup", tools=[tool],
                      config={"max_tokens": 3000})
    else:
        forced = {"type": "toolArray", "tools": [tool], "force": True}
        job = ChatJob(model=LLM, messages="call lookup",
                      config={"max_tokens": 3000, "rawTools": forced})
    with pytest.raises(ContextOverflowError, match="context"):
        final(send(app, job), 60).get(timeout=5)
