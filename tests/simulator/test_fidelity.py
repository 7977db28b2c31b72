"""Behaviours where the simulator follows LM Studio (issue 19), each through the real SDK,
sync and async. README "Fidelity" lists them with LM Studio's behaviour."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import lmstudio as lms
import pytest
from lmstudio.history import TextData
from lmstudio.json_api import ModelDownloadEndpoint

from simulator import gbnf
from simulator.testing import RunningSimulator
from tests.simulator.conftest import BIG_LLM_KEY, EMBED_KEY, LLM_KEY

pytestmark = pytest.mark.timeout(60)

LLM_PATH_ID = "HUGGING-QUANTS/llama-3.2-1b-instruct"  # path-style, any case
EMBED_PATH_ID = "nomic-ai/Nomic-Embed-Text-v1.5"
LLM_REL_PATH = "hugging-quants/Llama-3.2-1B-Instruct-GGUF/llama-3.2-1b-instruct-q4_k_m.gguf"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 57  # 65 bytes: base64 has padding
GRAMMAR = r'''
root ::= "{\"answer\":" answer ",\"sure\":" ("true" | "false") "}"   # comment
answer ::= "\"" [a-z ]{3,20} "\""
'''.strip()
GBNF: Any = {"type": "gbnf", "gbnfGrammar": GRAMMAR}


# -- model queries by path ------------------------------------------------------------

def test_path_queries_reach_every_model_rpc_sync(simulator: RunningSimulator) -> None:
    with lms.Client(simulator.host) as client:
        llm = client.llm._create_handle(LLM_PATH_ID)  # the SDK sends {"identifier": path}
        assert llm.get_info().model_key == LLM_KEY
        assert llm.get_load_config().context_length == 4096
        assert llm.count_tokens("a b") == 2 and len(llm.tokenize("a b")) == 2
        assert llm.apply_prompt_template(lms.Chat.from_history("hi"))
        assert llm.respond("hi", config={"maxTokens": 2}).stats.predicted_tokens_count == 2
        assert client.llm.model(LLM_PATH_ID).identifier == LLM_KEY  # getOrLoad
        emb = client.embedding._create_handle(EMBED_PATH_ID)
        assert len(emb.embed("text")) == 768 and emb.count_tokens("a") == 1
        loaded = client.llm.load_new_instance(LLM_PATH_ID.lower(), "by-path")
        assert loaded.get_info().model_key == LLM_KEY
        loaded.unload()
        with pytest.raises(lms.LMStudioModelNotFoundError):
            client.llm._create_handle("hugging-quants/no-such-model").get_info()


def test_path_queries_reach_every_model_rpc_async(simulator: RunningSimulator) -> None:
    async def main() -> None:
        async with lms.AsyncClient(simulator.host) as client:
            llm = client.llm._create_handle(LLM_PATH_ID)
            assert (await llm.get_info()).model_key == LLM_KEY
            assert (await llm.count_tokens("a b")) == 2
            result = await llm.respond("hi", config={"maxTokens": 2})
            assert result.stats.predicted_tokens_count == 2
            assert (await client.llm.model(LLM_PATH_ID)).identifier == LLM_KEY
            emb = client.embedding._create_handle(EMBED_PATH_ID)
            assert len(await emb.embed("text")) == 768
    asyncio.run(main())


# -- ModelInfo.path -------------------------------------------------------------------

def test_model_path_is_relative_to_the_models_folder_sync(simulator: RunningSimulator) -> None:
    with lms.Client(simulator.host) as client:
        info = client.llm.model(LLM_KEY).get_info()
        assert info.path == LLM_REL_PATH
        assert (Path(simulator.admin.state()["modelsDir"]) / info.path).is_file()
        downloaded = {m.model_key: m.path for m in client.list_downloaded_models()}
        assert downloaded[EMBED_KEY] == (
            "nomic-ai/nomic-embed-text-v1.5-GGUF/nomic-embed-text-v1.5.Q4_K_M.gguf")


def test_repo_folder_is_configurable_async(simulator_factory: Any) -> None:
    sim = simulator_factory({"models": {"mine": {"publisher": "me", "repo": "Mine-GGUF",
                                                 "file": "mine-Q8_0.gguf", "loaded": True}}})

    async def main() -> None:
        async with lms.AsyncClient(sim.host) as client:
            info = await (await client.llm.model("mine")).get_info()
            assert info.path == "me/Mine-GGUF/mine-Q8_0.gguf"
            assert (await client.llm.model("me/mine")).identifier == "mine"
    asyncio.run(main())


# -- file uploads ---------------------------------------------------------------------

def _check_uploads(first: lms.FileHandle, second: lms.FileHandle, text: lms.FileHandle) -> None:
    assert first.identifier != second.identifier  # same bytes, two files
    assert first.size_bytes == len(PNG) == second.size_bytes
    assert first.file_type == "image"
    assert text.file_type == "text/plain" and text.size_bytes == 11


def test_uploads_sync(client: lms.Client) -> None:
    _check_uploads(client.prepare_image(PNG, name="a.png"),
                   client.prepare_image(PNG, name="a.png"),
                   client.prepare_image(b"hello world", name="notes.txt"))


def test_uploads_async(simulator: RunningSimulator) -> None:
    async def main() -> None:
        async with lms.AsyncClient(simulator.host) as client:
            _check_uploads(await client.prepare_image(PNG, name="a.png"),
                           await client.prepare_image(PNG, name="a.png"),
                           await client.prepare_image(b"hello world", name="notes.txt"))
    asyncio.run(main())


# -- images to a model without vision ---------------------------------------------------

def test_image_to_text_model_is_a_server_error_sync(client: lms.Client) -> None:
    chat = lms.Chat()
    chat.add_user_message("What is this?", images=[client.prepare_image(PNG, name="a.png")])
    with pytest.raises(lms.LMStudioServerError, match="does not support images"):
        client.llm.model(LLM_KEY).respond(chat)


def test_image_to_text_model_is_a_server_error_async(simulator: RunningSimulator) -> None:
    async def main() -> None:
        async with lms.AsyncClient(simulator.host) as client:
            chat = lms.Chat()
            chat.add_user_message("What?", images=[await client.prepare_image(PNG, name="a.png")])
            with pytest.raises(lms.LMStudioServerError, match="does not support images"):
                await (await client.llm.model(LLM_KEY)).respond(chat)
    asyncio.run(main())


# -- grammar-constrained output ---------------------------------------------------------

def _check_grammar_reply(content: str) -> None:
    value = json.loads(content)
    assert set(value) == {"answer", "sure"} and isinstance(value["sure"], bool)
    assert 3 <= len(value["answer"]) <= 20
    assert set(value["answer"]) <= set("abcdefghijklmnopqrstuvwxyz ")


def test_gbnf_grammar_is_honoured_sync(client: lms.Client) -> None:
    llm = client.llm.model(LLM_KEY)
    for prompt in ("one", "two", "three"):
        result = llm.complete(prompt, config={"structured": GBNF})
        _check_grammar_reply(result.content)
        assert result.parsed == json.loads(result.content)
    with pytest.raises(lms.LMStudioServerError, match="Failed to parse grammar"):
        llm.respond("x", response_format={"type": "gbnf", "gbnfGrammar": "start ::= \"a\""})


def test_gbnf_grammar_is_honoured_async(simulator: RunningSimulator) -> None:
    async def main() -> None:
        async with lms.AsyncClient(simulator.host) as client:
            llm = await client.llm.model(LLM_KEY)
            result = await llm.respond("x", response_format=GBNF)
            _check_grammar_reply(result.content)
    asyncio.run(main())


def test_gbnf_generator_covers_the_grammar_language() -> None:
    import random

    from simulator import textgen
    grammar = 'root ::= item ("," item)* [\\n]?\nitem ::= [0-9]{2} | "(" root ")" | .'
    for seed in range(20):
        text = gbnf.generate(grammar, random.Random(seed),
                             textgen.iter_word_pieces(random.Random(seed)))
        assert text and text.count("(") == text.count(")"), text
    with pytest.raises(gbnf.GrammarError, match="undefined rule"):
        gbnf.parse("root ::= missing")


# -- presets ------------------------------------------------------------------------------

def test_unknown_preset_sync(simulator_factory: Any) -> None:
    sim = simulator_factory({"presets": {"@local:short": {
        "name": "Short", "fields": {"llm.prediction.maxPredictedTokens":
                                    {"checked": True, "value": 3}}}}})
    with lms.Client(sim.host) as client:
        llm = client.llm.model(LLM_KEY)
        with pytest.raises(lms.LMStudioPresetNotFoundError) as caught:
            llm.complete("Some text", preset="No such preset")
        assert caught.value.server_error is not None
        data = caught.value.server_error.display_data
        assert data is not None and data["code"] == "generic.presetNotFound"
        assert llm.complete("Some text", preset="short").stats.predicted_tokens_count == 3


def test_unknown_preset_async(simulator: RunningSimulator) -> None:
    async def main() -> None:
        async with lms.AsyncClient(simulator.host) as client:
            llm = await client.llm.model(LLM_KEY)
            stream = await llm.complete_stream("Some text", preset="No such preset")
            with pytest.raises(lms.LMStudioPresetNotFoundError):
                await stream.wait_for_result()
    asyncio.run(main())


# -- embedding tokenize -------------------------------------------------------------------

def test_embedding_tokenize_adds_start_and_end_sync(client: lms.Client) -> None:
    emb = client.embedding.model(EMBED_KEY)
    tokens = emb.tokenize("two words")
    assert len(tokens) == emb.count_tokens("two words") + 2
    assert len(client.llm.model(LLM_KEY).tokenize("two words")) == 2


def test_embedding_tokenize_adds_start_and_end_async(simulator: RunningSimulator) -> None:
    async def main() -> None:
        async with lms.AsyncClient(simulator.host) as client:
            emb = await client.embedding.model(EMBED_KEY)
            assert len(await emb.tokenize("a b c")) == await emb.count_tokens("a b c") + 2
    asyncio.run(main())


# -- unknown channel endpoint -------------------------------------------------------------

def _warnings(sim: RunningSimulator) -> list[dict[str, Any]]:
    return [e["msg"] for e in sim.admin.log(type="communicationWarning")]


def test_unknown_channel_gets_a_warning_and_stays_open_sync(simulator: RunningSimulator) -> None:
    # downloadModel is not an llm channel
    with lms.Client(simulator.host) as client, \
            client.llm._create_channel(ModelDownloadEndpoint("x")):
        simulator.admin.wait_until(lambda: _warnings(simulator), 10)
        assert client.llm.list_loaded()  # the session lives on
    assert _warnings(simulator)[0]["kind"] == "channelEndpointUnknown"
    assert not simulator.admin.log(type="channelError")
    assert not simulator.admin.log(type="channelClose")


def test_unknown_channel_gets_a_warning_and_stays_open_async(simulator: RunningSimulator) -> None:
    async def main() -> None:
        async with lms.AsyncClient(simulator.host) as client, \
                client.llm._create_channel(ModelDownloadEndpoint("x")):
            await asyncio.to_thread(simulator.admin.wait_until, lambda: _warnings(simulator), 10)
            assert await client.llm.list_loaded()
    asyncio.run(main())
    assert "unknown endpoint, endpoint = downloadModel" in _warnings(simulator)[0]["warning"]


# -- duplicate identifier -----------------------------------------------------------------

def test_duplicate_identifier_sync(client: lms.Client) -> None:
    with pytest.raises(lms.LMStudioServerError, match="Model load error.*already exists") as caught:
        client.llm.load_new_instance(LLM_KEY, LLM_KEY)
    assert caught.value.server_error is not None
    assert caught.value.server_error.suggestion is None


def test_duplicate_identifier_async(simulator: RunningSimulator) -> None:
    async def main() -> None:
        async with lms.AsyncClient(simulator.host) as client:
            with pytest.raises(lms.LMStudioServerError, match="already exists"):
                await client.embedding.load_new_instance(EMBED_KEY, EMBED_KEY)
    asyncio.run(main())


# -- tools ----------------------------------------------------------------------------------

def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


POWER: Any = {"type": "function", "function": {  # properties in one order, required in another
    "name": "power", "description": "Raise a base to an exponent.",
    "parameters": {"type": "object", "required": ["base", "exponent"], "properties": {
        "exponent": {"type": "integer"}, "base": {"type": "integer"}}}}}


RAW_POWER: Any = {"rawTools": {"type": "toolArray", "tools": [POWER]}}


def _final_text(messages: list[Any]) -> str:
    final = messages[-1]
    assert isinstance(final, lms.AssistantResponse)
    part = final.content[0]
    assert isinstance(part, TextData)
    return part.text


def test_tool_called_for_what_it_does_sync(client: lms.Client) -> None:
    llm = client.llm.model(LLM_KEY)
    messages: list[Any] = []
    result = llm.act("What is 12 times 3?", [add, multiply], on_message=messages.append)
    assert result.rounds == 2
    assert "36" in _final_text(messages)  # answered in words after the tool result
    stream = llm.respond_stream("What is 2 to the power of 8?",
                                config=RAW_POWER)
    from lmstudio.json_api import PredictionToolCallEvent
    calls = [e.arg for e in stream._iter_events() if isinstance(e, PredictionToolCallEvent)]
    assert [(c.name, list((c.arguments or {}).items())) for c in calls] == [
        ("power", [("base", 2), ("exponent", 8)])]
    assert llm.act("Tell me about your day", [add, multiply]).rounds == 1  # nothing to do


def test_tool_called_for_what_it_does_async(simulator: RunningSimulator) -> None:
    async def main() -> None:
        async with lms.AsyncClient(simulator.host) as client:
            llm = await client.llm.model(LLM_KEY)
            messages: list[Any] = []
            result = await llm.act("What is 3 + 4?", [multiply, add], on_message=messages.append)
            assert result.rounds == 2 and "7" in _final_text(messages)
    asyncio.run(main())


# -- repository -----------------------------------------------------------------------------

def test_search_and_download_sync(simulator: RunningSimulator) -> None:
    progress: list[int] = []
    finalized: list[bool] = []
    with lms.Client(simulator.host) as client:
        found = client.repository.search_models("SmolLM2")
        assert [m.search_result.name for m in found] == [
            "lmstudio-community/SmolLM2-135M-Instruct-GGUF"]
        options = found[0].get_download_options()
        assert len(options) == 1 and options[0].info.quantization == "Q4_K_M"
        assert "smollm2-135m-instruct" not in {m.model_key for m in client.list_downloaded_models()}
        key = options[0].download(on_progress=lambda u: progress.append(u.downloaded_bytes),
                                  on_finalize=lambda: finalized.append(True))
        assert key == "smollm2-135m-instruct" and finalized == [True]
        assert progress == sorted(progress) and progress[-1] == options[0].info.size_bytes
        assert key in {m.model_key for m in client.list_downloaded_models()}
        assert client.llm.model(key).respond("hi", config={"maxTokens": 2}).content
        assert client.repository.search_models("llama-3.2")[0].search_result.name == (
            "hugging-quants/Llama-3.2-1B-Instruct-GGUF")  # the catalog is on the hub too
        assert client.repository.search_models("no-such-model-anywhere") == []


def test_search_and_download_async(simulator: RunningSimulator) -> None:
    async def main() -> None:
        async with lms.AsyncClient(simulator.host) as client:
            found = await client.repository.search_models("qwen2.5-0.5b", limit=5)
            options = await found[0].get_download_options()
            key = await options[0].download()
            assert key == "qwen2.5-0.5b-instruct"
            assert key in {m.model_key for m in await client.list_downloaded_models()}
    asyncio.run(main())


# -- every new message shape validates against the SDK's schemas ----------------------------

def test_new_messages_match_sdk_schemas(simulator: RunningSimulator) -> None:
    from tests.simulator.test_conformance import _check
    with lms.Client(simulator.host) as client:
        found = client.repository.search_models("smollm2")
        key = found[0].get_download_options()[0].download()
        client.llm.model(BIG_LLM_KEY)
        client.llm.model(key)  # JIT: evicts the other JIT-loaded model
        client.prepare_image(PNG, name="a.png")
        llm = client.llm.model(LLM_PATH_ID)
        llm.respond("x", response_format=GBNF)
        with pytest.raises(lms.LMStudioPresetNotFoundError):
            llm.respond("x", preset="none")
        client.embedding.model(EMBED_PATH_ID).tokenize("a")
    origin: dict[tuple[int, str, int], tuple[str, str]] = {}
    seen: set[str] = set()
    for entry in simulator.admin.log():
        msg = entry["msg"]
        if entry["dir"] == "in" and msg.get("type") == "rpcCall":
            origin[(entry["conn"], "call", msg["callId"])] = (entry["ns"], msg["endpoint"])
        elif entry["dir"] == "in" and msg.get("type") == "channelCreate":
            origin[(entry["conn"], "channel", msg["channelId"])] = (entry["ns"], msg["endpoint"])
        elif entry["dir"] == "out":
            seen.add(_check(entry, origin))
    assert {"downloadModel:downloadProgress", "downloadModel:startFinalizing",
            "downloadModel:success", "getOrLoad:unloadingOtherJITModel",
            "channelError"} <= seen, seen


# -- the real engine samples under the grammar (llama.cpp) ----------------------------------

@pytest.mark.slow
def test_real_engine_honours_gbnf_and_embedding_tokens(simulator_factory: Any) -> None:
    from simulator.real_models import EMBED_KEY as REAL_EMBED
    from simulator.real_models import LLM_KEY as REAL_LLM
    from simulator.real_models import missing_reason
    from tests.support.services import missing_service
    reason = missing_reason()
    if reason:
        missing_service(f"the real engine: {reason}")
    sim = simulator_factory({"engine": "real", "real": {"threads": 1}})
    grammar = {"type": "gbnf", "gbnfGrammar": 'root ::= "{\\"answer\\": \\"" [a-z ]{1,20} "\\"}"'}
    with lms.Client(sim.host) as client:
        result = client.llm.model(REAL_LLM).respond("Say something", response_format=grammar,
                                                    config={"maxTokens": 40})
        assert set(json.loads(result.content)) == {"answer"}
        emb = client.embedding.model(REAL_EMBED)  # its start and end tokens, as LM Studio
        assert len(emb.tokenize("two words")) == emb.count_tokens("two words") + 2

    async def main() -> None:
        async with lms.AsyncClient(sim.host) as client:
            llm = await client.llm.model(REAL_LLM)
            result = await llm.complete("Answer:", response_format=grammar,
                                        config={"maxTokens": 40})
            assert set(json.loads(result.content)) == {"answer"}
    asyncio.run(main())


# -- JIT loading: idle TTL and auto-evict ---------------------------------------------------

def _loaded(sim: RunningSimulator) -> set[str]:
    return {i["identifier"] for i in sim.admin.state()["instances"]}


def _unloads(sim: RunningSimulator, reason: str) -> list[str]:
    return [e["msg"]["identifier"] for e in sim.admin.log(type="modelUnloaded")
            if e["msg"]["reason"] == reason]


def test_idle_ttl_unloads_and_requests_keep_it_sync(simulator: RunningSimulator) -> None:
    import time
    with lms.Client(simulator.host) as client:
        big = client.llm.model(BIG_LLM_KEY, ttl=1)  # getOrLoad with loadTtlMs 1000
        busy_until = time.monotonic() + 2.5  # requests for 2.5 TTLs: never idle for 1 s
        while time.monotonic() < busy_until:
            big.count_tokens("still here")
        assert BIG_LLM_KEY in _loaded(simulator)
        simulator.admin.wait_until(lambda: BIG_LLM_KEY not in _loaded(simulator), 10)
        assert _unloads(simulator, "ttl") == [BIG_LLM_KEY]
        assert LLM_KEY in _loaded(simulator)  # loaded at start: no TTL


def test_idle_ttl_applies_to_load_new_instance_async(simulator: RunningSimulator) -> None:
    async def main() -> None:
        async with lms.AsyncClient(simulator.host) as client:
            await client.embedding.load_new_instance(EMBED_KEY, "short-lived", ttl=1)
            await asyncio.to_thread(simulator.admin.wait_until,
                                    lambda: "short-lived" not in _loaded(simulator), 10)
    asyncio.run(main())
    assert _unloads(simulator, "ttl") == ["short-lived"]


def _evicted(sim: RunningSimulator) -> list[str]:
    return [e["msg"]["message"]["info"]["identifier"]
            for e in sim.admin.log(type="channelSend:unloadingOtherJITModel")]


def test_jit_load_evicts_other_jit_models_sync(simulator_factory: Any) -> None:
    sim = simulator_factory({"models": {EMBED_KEY: {"loaded": False}}})
    with lms.Client(sim.host) as client:
        client.llm.load_new_instance(LLM_KEY, "manual")  # loadModel: never JIT-evicted
        client.embedding.model(EMBED_KEY)  # JIT
        client.llm.model(BIG_LLM_KEY)  # JIT: evicts the embedding model, whatever its domain
        assert _evicted(sim) == [EMBED_KEY] and _unloads(sim, "jitEvict") == [EMBED_KEY]
        assert _loaded(sim) == {LLM_KEY, "manual", BIG_LLM_KEY}
        with pytest.raises(lms.LMStudioModelNotFoundError):
            client.embedding._create_handle(EMBED_KEY).get_info()


def test_jit_auto_evict_can_be_off_async(simulator_factory: Any) -> None:
    sim = simulator_factory({"models": {EMBED_KEY: {"loaded": False}},
                             "server": {"jit_auto_evict": False}})

    async def main() -> None:
        async with lms.AsyncClient(sim.host) as client:
            await client.embedding.model(EMBED_KEY)
            await client.llm.model(BIG_LLM_KEY)
    asyncio.run(main())
    assert _evicted(sim) == [] and {EMBED_KEY, BIG_LLM_KEY} <= _loaded(sim)


def test_jit_load_evicts_other_jit_models_async(simulator_factory: Any) -> None:
    sim = simulator_factory({"models": {EMBED_KEY: {"loaded": False}}})

    async def main() -> None:
        async with lms.AsyncClient(sim.host) as client:
            await client.llm.model(BIG_LLM_KEY)
            await client.embedding.model(EMBED_KEY)  # evicts the JIT-loaded LLM
    asyncio.run(main())
    assert _evicted(sim) == [BIG_LLM_KEY] and BIG_LLM_KEY not in _loaded(sim)
