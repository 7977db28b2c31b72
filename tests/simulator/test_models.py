"""Model management: not found, load/unload/getOrLoad, VRAM accounting."""

from __future__ import annotations

import asyncio

import lmstudio as lms
import pytest

from simulator.config import DEFAULT_MODELS
from tests.simulator.conftest import BIG_LLM_KEY, EMBED_KEY, LLM_KEY

pytestmark = pytest.mark.timeout(30)

_LLAMA_WEIGHTS = DEFAULT_MODELS[LLM_KEY]["size_bytes"]
_LLAMA_KV_PER_TOKEN = 16 * 8 * 64 * 2 * 2  # layers x KV heads x head dim x (K, V) x f16
# Loaded at start: both models' weights, and llama.cpp's KV cache for the llm's 4096 cells.
_LOADED = (_LLAMA_WEIGHTS + DEFAULT_MODELS[EMBED_KEY]["size_bytes"]
           + 4096 * _LLAMA_KV_PER_TOKEN)


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
    sim = simulator_factory({"gpu": {"vram_bytes": _LOADED + 100_000_000}})
    with lms.Client(sim.host) as client, pytest.raises(lms.LMStudioServerError,
                                                      match="out of memory"):
        client.llm.model(BIG_LLM_KEY)
    assert BIG_LLM_KEY not in {i["identifier"] for i in sim.admin.state()["instances"]}


def test_llama_cpp_reserves_the_kv_cache_at_load(simulator) -> None:  # type: ignore[no-untyped-def]
    assert simulator.admin.state()["vram"]["used_bytes"] == _LOADED
    with lms.Client(simulator.host) as client:
        second = client.llm.load_new_instance(LLM_KEY, "second", config={"contextLength": 8192})
        assert second.respond("hi", config={"maxTokens": 20}).content
        assert simulator.admin.state()["vram"]["used_bytes"] == (
            _LOADED + _LLAMA_WEIGHTS + 8192 * _LLAMA_KV_PER_TOKEN)
        second.unload()
    assert simulator.admin.state()["vram"]["used_bytes"] == _LOADED


async def _respond_all(host: str, identifier: str, count: int, max_tokens: int) -> list[str]:
    """`count` predictions at once; each result's content, or its error's message."""
    async with lms.AsyncClient(host) as client:
        model = await client.llm.model(identifier)

        async def one(i: int) -> str:
            try:
                result = await model.respond(f"question {i}", config={"maxTokens": max_tokens})
            except lms.LMStudioError as exc:
                return f"error: {exc}"
            return f"{result.stats.stop_reason}: {result.stats.predicted_tokens_count}"

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def test_unified_kv_cells_run_out_however_much_vram_is_free(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    # 4 parallel predictions share 256 cells; each wants its prompt + 100 tokens
    sim = simulator_factory({"faults": {"reply_tokens": 100}})
    with lms.Client(sim.host) as client:
        client.llm.load_new_instance(LLM_KEY, "small", config={"contextLength": 256})
    outcomes = asyncio.run(_respond_all(sim.host, "small", 4, 100))
    failed = [o for o in outcomes if o.startswith("error")]
    assert failed and len(failed) < 4, outcomes
    assert "failed to find a memory slot for batch of size" in failed[0]
    small = next(i for i in sim.admin.state()["instances"] if i["identifier"] == "small")
    assert (small["engine"], small["unifiedKv"], small["kvCellsUsed"]) == ("llama.cpp", True, 0)
    assert sim.admin.state()["vram"]["free_bytes"] > 1 << 30  # VRAM was never the limit


def test_without_unified_kv_each_sequence_has_n_ctx_over_p(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    sim = simulator_factory({"timing": {"unified_kv": False}, "faults": {"reply_tokens": 100}})
    with lms.Client(sim.host) as client:
        model = client.llm.load_new_instance(LLM_KEY, "split", config={"contextLength": 256})
        with pytest.raises(lms.LMStudioPredictionError, match="n_ctx: 64"):
            model.respond("word " * 80)  # a prompt past n_ctx_seq = 256 / 4
    outcomes = asyncio.run(_respond_all(sim.host, "split", 4, 100))
    assert all(o.startswith("contextLengthReached") for o in outcomes), outcomes


def test_mlx_kv_grows_per_token_until_memory_runs_out(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    mlx = {"format": "mlx", "size_bytes": 100_000_000, "layers": 16, "kv_heads": 8,
           "head_dim": 64}  # 32 KiB per token
    sim = simulator_factory({"models": {"mlx-llm": mlx}, "faults": {"reply_tokens": 1000},
                             "gpu": {"vram_bytes": _LOADED + 100_000_000 + 10_000_000}})
    with lms.Client(sim.host) as client:
        model = client.llm.model("mlx-llm")
        assert model.get_info().format == "safetensors"
        assert model.respond("small", config={"maxTokens": 50}).content
        with pytest.raises(lms.LMStudioPredictionError, match="out of memory"):
            model.respond("big", config={"maxTokens": 1000})
    assert sim.admin.state()["vram"]["used_bytes"] == _LOADED + 100_000_000  # KV given back


def test_kv_overflow_as_channel_error(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    sim = simulator_factory({"server": {"error_style": "channelError"},
                             "faults": {"reply_tokens": 100}})
    with lms.Client(sim.host) as client, pytest.raises(lms.LMStudioServerError,
                                                      match="n_ctx: 64"):
        model = client.llm.load_new_instance(LLM_KEY, "tiny", config={"contextLength": 64})
        model.respond("word " * 80)


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


def test_kv_cache_settings_change_the_vram_needed_at_load(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    # 1024 cells: f16 needs 32 MiB, q4_0 K+V a quarter of that, KV in RAM none.
    sim = simulator_factory({"gpu": {"vram_bytes": _LOADED + 20_000_000}})
    with lms.Client(sim.host) as client:
        with pytest.raises(lms.LMStudioServerError, match="out of memory"):
            client.llm.load_new_instance(LLM_KEY, "f16", config={
                "gpu": {"ratio": 0.0}, "contextLength": 1024})
        quantized = client.llm.load_new_instance(LLM_KEY, "q4", config={
            "gpu": {"ratio": 0.0}, "contextLength": 1024, "llamaKCacheQuantizationType": "q4_0",
            "llamaVCacheQuantizationType": "q4_0"})
        in_ram = client.llm.load_new_instance(LLM_KEY, "ram", config={
            "gpu": {"ratio": 0.0}, "contextLength": 1024, "offloadKVCacheToGpu": False})
        assert quantized.respond("big", config={"maxTokens": 500}).content
        assert in_ram.respond("big", config={"maxTokens": 500}).content
    assert sim.admin.state()["vram"]["used_bytes"] == _LOADED + 1024 * _LLAMA_KV_PER_TOKEN // 4


def test_parallel_and_unified_kv_are_load_keys() -> None:
    """LM Studio's `llm.load.numParallelSessions` / `useUnifiedKvCache` at load (the Python
    SDK 1.5.0 cannot send them; LM Studio's other clients can), reported back."""
    from simulator.config import load_config
    from simulator.state import SimState

    state = SimState(load_config())
    inst = state.load(LLM_KEY, "two", {"llm.load.contextLength": 1000,
                                       "llm.load.numParallelSessions": 2,
                                       "llm.load.useUnifiedKvCache": False})
    assert (inst.parallel, inst.slots.size, inst.unified_kv, inst.seq_context) == (
        2, 2, False, 500)
    reported = {f["key"]: f["value"] for f in state.catalog.load_config_kv(inst)["fields"]}
    assert reported["llm.load.numParallelSessions"] == 2
    assert reported["llm.load.useUnifiedKvCache"] is False
    default = state.catalog.instances[LLM_KEY]  # loaded at start: the config's defaults
    assert (default.parallel, default.unified_kv, default.seq_context) == (4, True, 4096)
    state.catalog.close()
