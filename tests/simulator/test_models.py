"""Model management: not found, load/unload/getOrLoad, VRAM accounting."""

from __future__ import annotations

import asyncio

import lmstudio as lms
import pytest

from simulator.config import DEFAULT_MODELS
from tests.simulator.conftest import BIG_LLM_KEY, EMBED_KEY, LLM_KEY

pytestmark = pytest.mark.timeout(30)

_LOADED_WEIGHTS = (DEFAULT_MODELS[LLM_KEY]["size_bytes"] + DEFAULT_MODELS[EMBED_KEY]["size_bytes"])


def test_unknown_model_is_model_not_found(client: lms.Client) -> None:
    with pytest.raises(lms.LMStudioModelNotFoundError):
        client.llm.model("no-such-model")
    with pytest.raises(lms.LMStudioModelNotFoundError):
        client.embedding.model(LLM_KEY)  # wrong domain


def test_get_or_load_then_unload(client: lms.Client) -> None:
    progress: list[float] = []
    model = client.llm.model(BIG_LLM_KEY, on_load_progress=progress.append)
    assert progress and progress[-1] == 1.0
    assert {m.identifier for m in client.llm.list_loaded()} == {LLM_KEY, BIG_LLM_KEY}
    assert model.get_info().architecture == "qwen2"
    assert model.respond("hi").stats.stop_reason == "eosFound"
    model.unload()
    assert [m.identifier for m in client.llm.list_loaded()] == [LLM_KEY]
    with pytest.raises(lms.LMStudioModelNotFoundError):
        model.respond("hi")


def test_load_new_instance_with_config(client: lms.Client) -> None:
    model = client.llm.load_new_instance(LLM_KEY, "second", config={"contextLength": 2048})
    assert model.identifier == "second"
    assert model.get_context_length() == 2048
    assert model.get_load_config().context_length == 2048
    assert model.respond("hi").model_info.model_key == LLM_KEY
    model.unload()


def test_load_that_does_not_fit_fails(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    sim = simulator_factory({"gpu": {"vram_bytes": _LOADED_WEIGHTS + 100_000_000}})
    with lms.Client(sim.host) as client, pytest.raises(lms.LMStudioServerError,
                                                      match="out of memory"):
        client.llm.model(BIG_LLM_KEY)
    assert BIG_LLM_KEY not in {i["identifier"] for i in sim.admin.state()["instances"]}


def test_kv_cache_overflow_fails_prediction(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    free_bytes = 10_000_000  # ~300 tokens of llama KV (32 KiB per token)
    sim = simulator_factory({"gpu": {"vram_bytes": _LOADED_WEIGHTS + free_bytes}})
    with lms.Client(sim.host) as client:
        model = client.llm.model(LLM_KEY)
        assert model.respond("small", config={"maxTokens": 50}).content
        with pytest.raises(lms.LMStudioPredictionError,
                           match="Failed to allocate KV cache: out of memory"):
            model.respond("big", config={"maxTokens": 1000})
        assert model.respond("small again", config={"maxTokens": 50}).content
    assert sim.admin.state()["vram"]["used_bytes"] == _LOADED_WEIGHTS  # KV released


def test_kv_overflow_as_channel_error(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    sim = simulator_factory({"gpu": {"vram_bytes": _LOADED_WEIGHTS + 1_000_000},
                             "server": {"error_style": "channelError"}})
    with lms.Client(sim.host) as client, pytest.raises(lms.LMStudioServerError,
                                                      match="KV cache"):
        client.llm.model(LLM_KEY).respond("big", config={"maxTokens": 1000})


def test_duplicate_identifier_is_rejected(client: lms.Client) -> None:
    with pytest.raises(lms.LMStudioServerError, match="Model load error.*already exists"):
        client.llm.load_new_instance(LLM_KEY, LLM_KEY)


def test_concurrent_get_or_load_loads_once(simulator) -> None:  # type: ignore[no-untyped-def]
    async def main() -> set[str]:
        async with lms.AsyncClient(simulator.host) as client:
            handles = await asyncio.gather(*(client.llm.model(BIG_LLM_KEY) for _ in range(3)))
            return {h.identifier for h in handles}

    assert asyncio.run(main()) == {BIG_LLM_KEY}
    loaded = [i["identifier"] for i in simulator.admin.state()["instances"]]
    assert loaded.count(BIG_LLM_KEY) == 1


def test_kv_cache_settings_change_the_vram_needed(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    # 1000-token reply: f16 needs ~33 MB, q4_0 K+V a quarter of that, KV in RAM none.
    sim = simulator_factory({"gpu": {"vram_bytes": _LOADED_WEIGHTS + 20_000_000}})
    with lms.Client(sim.host) as client:
        quantized = client.llm.load_new_instance(LLM_KEY, "q4", config={
            "gpu": {"ratio": 0.0}, "llamaKCacheQuantizationType": "q4_0",
            "llamaVCacheQuantizationType": "q4_0"})
        in_ram = client.llm.load_new_instance(LLM_KEY, "ram", config={
            "gpu": {"ratio": 0.0}, "offloadKVCacheToGpu": False})
        with pytest.raises(lms.LMStudioPredictionError, match="KV cache"):
            client.llm.model(LLM_KEY).respond("big", config={"maxTokens": 1000})
        assert quantized.respond("big", config={"maxTokens": 1000}).content
        assert in_ram.respond("big", config={"maxTokens": 1000}).content
