"""LMQ_LOAD_CONFIG: the SDK's load-config keys, checked by the SDK's schema, plus shortcuts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_admission_gguf import write_gguf
from workers.admission.estimate import model_cost
from workers.admission.seam import ModelFacts
from workers.error import ConfigError
from workers.lmstudio.load_config import KvFacts, build, kv_facts
from workers.settings import Settings

EVERY_KEY = {
    "flashAttention": True, "llamaKCacheQuantizationType": "q8_0",
    "llamaVCacheQuantizationType": "q4_0", "evalBatchSize": 256, "ropeFrequencyBase": 1e6,
    "ropeFrequencyScale": 0.5, "keepModelInMemory": True, "tryMmap": False,
    "offloadKVCacheToGpu": True, "numExperts": 4, "contextLength": 8192,
    "gpu": {"ratio": 0.5},
}


def test_every_issue_key_passes_as_given() -> None:
    assert build("llm", EVERY_KEY, None, None) == EVERY_KEY


def test_json_and_snake_case_come_out_camel_case() -> None:
    config = build("llm", '{"flash_attention": true, "eval_batch_size": 64}', None, None)
    assert config == {"flashAttention": True, "evalBatchSize": 64}


def test_shortcuts_fill_in_and_must_agree() -> None:
    assert build("llm", {"flashAttention": True}, 4096, "max") == {
        "flashAttention": True, "contextLength": 4096, "gpu": {"ratio": "max"}}
    assert build("llm", {"contextLength": 4096}, 4096, None) == {"contextLength": 4096}
    with pytest.raises(ConfigError, match="LMQ_CONTEXT_LENGTH=2048 and LMQ_LOAD_CONFIG "
                       "contextLength=4096 disagree"):
        build("llm", {"contextLength": 4096}, 2048, None)


@pytest.mark.parametrize(("raw", "message"), [
    ({"flashAtention": True}, "LMQ_LOAD_CONFIG: unknown key 'flashAtention' for an LLM; "
     "the SDK's LlmLoadModelConfig keys are: contextLength, evalBatchSize, flashAttention"),
    ({"maxParallelPredictions": 4}, "unknown key 'maxParallelPredictions'"),
    ({"evalBatchSize": "big"}, "LMQ_LOAD_CONFIG: Expected `int | null`, got `str` - at "
     "`$.evalBatchSize`"),
    ({"llamaKCacheQuantizationType": "q3"}, "at `$.llamaKCacheQuantizationType`"),
    ("{flashAttention: true}", "LMQ_LOAD_CONFIG is not valid JSON"),
    ("[1]", "LMQ_LOAD_CONFIG must be a JSON object, not list"),
])
def test_a_wrong_key_or_value_is_named(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build("llm", raw, None, None)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_embedding_models_have_their_own_keys() -> None:
    assert build("embedding", {"tryMmap": False}, None, None) == {"tryMmap": False}
    with pytest.raises(ConfigError, match="unknown key 'flashAttention' for an embedding "
                       "model; the SDK's EmbeddingLoadModelConfig keys"):
        build("embedding", {"flashAttention": True}, None, None)


def test_the_setting_takes_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMQ_LOAD_CONFIG", '{"flashAttention": true}')
    raw = Settings(_env_file=None).load_config  # type: ignore[call-arg]
    assert build("llm", raw, None, None) == {"flashAttention": True}


def test_kv_facts() -> None:
    assert kv_facts(EVERY_KEY) == KvFacts("q8_0", "q4_0", True)
    assert kv_facts({"llamaKCacheQuantizationType": True}) == KvFacts(None, None, None)


def test_admission_counts_kv_bytes_with_the_cache_types(tmp_path: Path) -> None:
    path = str(write_gguf(tmp_path / "m.gguf"))  # 16 layers x 8 KV heads x 64: 16,384 elems
    base = ModelFacts("m", 800_000_000, path=path)
    f16 = model_cost(base).kv_bytes_per_token
    q8_q4 = model_cost(ModelFacts("m", 800_000_000, path=path, k_cache_type="q8_0",
                                  v_cache_type="q4_0")).kv_bytes_per_token
    assert (f16, q8_q4) == (8192 * 2 * 2, 8192 * (34 + 18) // 32)
    off = model_cost(ModelFacts("m", 800_000_000, path=path, kv_on_gpu=False))
    assert (off.kv_bytes_per_token, off.kv_source) == (0, "off GPU")
    estimate = model_cost(ModelFacts("m", 800_000_000)).kv_bytes_per_token
    quarter = model_cost(ModelFacts("m", 800_000_000, k_cache_type="q4_0",
                                    v_cache_type="q4_0")).kv_bytes_per_token
    assert quarter == pytest.approx(estimate * 18 / 32 / 2, abs=1)
