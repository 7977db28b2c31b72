"""The real engine's pure helpers (no models loaded): history conversion, request body,
GGUF header reading of the real file when installed, and the engine choice in the config."""

from __future__ import annotations

import pytest

from simulator import real_models
from simulator.config import load_config
from simulator.engine import PredictRequest
from simulator.real_engine import chat_messages, completion_body
from simulator.real_settings import RealEngineConfig


def test_tool_history_becomes_plain_turns() -> None:
    history = [
        {"role": "user", "content": [{"type": "text", "text": "add 1 and 1"}]},
        {"role": "assistant", "content": [{"type": "toolCallRequest", "toolCallRequest": {
            "id": "c1", "type": "function", "name": "add", "arguments": {"a": 1, "b": 1}}}]},
        {"role": "tool", "content": [{"type": "toolCallResult", "content": "2",
                                      "toolCallId": "c1"}]},
    ]
    out = chat_messages(history)
    assert out[0] == {"role": "user", "content": "add 1 and 1"}
    assert out[1] == {"role": "assistant",
                      "content": 'I called the tool add with {"a": 1, "b": 1}.'}
    assert out[2] == {"role": "user", "content": "The tool add returned: 2"}


def test_tool_result_without_a_known_call_and_text_with_a_call() -> None:
    history = [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "toolCallRequest", "toolCallRequest": {"id": "c2", "name": "find",
                                                            "arguments": {}}}]},
        {"role": "tool", "content": [{"type": "toolCallResult", "content": "x",
                                      "toolCallId": "other"}]},
    ]
    out = chat_messages(history)
    assert out[0]["content"] == "Let me look.\nI called the tool find with {}."
    assert out[1] == {"role": "user", "content": "The tool returned: x"}


def test_completion_body_forwards_limits_schema_and_seed() -> None:
    request = PredictRequest(model_key="m", messages=[], max_tokens=7, seed=3,
                             json_schema={"type": "object"})
    body = completion_body("p", request, RealEngineConfig(temperature=0.0))
    assert body["max_tokens"] == 7 and body["seed"] == 3 and body["temperature"] == 0.0
    assert body["json_schema"] == {"type": "object"}
    unlimited = completion_body("p", PredictRequest(model_key="m", messages=[]),
                                RealEngineConfig())
    assert unlimited["max_tokens"] == -1 and "json_schema" not in unlimited


def test_deterministic_config_keeps_the_default_catalog() -> None:
    config = load_config({})
    assert config.engine == "deterministic" and "llama-3.2-1b-instruct" in config.models


@pytest.mark.skipif(not real_models.available(), reason="local models not installed")
def test_real_config_catalog_reads_the_real_gguf() -> None:
    config = load_config({"real": {"context_length": 1024}}, engine="real")
    assert set(config.models) == {real_models.LLM_KEY, real_models.EMBED_KEY}
    llm = config.models[real_models.LLM_KEY]
    assert (llm.layers, llm.kv_heads, llm.head_dim, llm.max_context_length) == (30, 3, 64, 8192)
    assert llm.context_length == 1024 and llm.gguf_path.endswith(".gguf")
    assert llm.size_bytes == real_models.llm_path().stat().st_size
