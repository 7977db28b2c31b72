"""The worker's load config: LMQ_LOAD_CONFIG in the SDK's keys, checked by the SDK's schema.

    build(kind, raw, context_length, gpu_offload) -> dict   camelCase, as the SDK sends it
    kv_facts(config) -> KvFacts                              what admission needs from it
    parallel_facts(fields) -> (parallel, unified)           from LM Studio's own keys
    engine_of(format) -> "llama.cpp" | "mlx"

`raw` is the JSON object of LMQ_LOAD_CONFIG (or a dict from Python): any key of
`lmstudio.LlmLoadModelConfig` (embedding models: `EmbeddingLoadModelConfig`), camelCase or
snake_case. The SDK itself drops keys it does not know without a word (a typo would load
the model with LM Studio's defaults), so unknown top-level keys are refused here, naming
them and the keys that exist; values are checked by the SDK's own msgspec schema
(`from_dict`), whose message names the key (`$.flashAttention`). The shortcuts
LMQ_CONTEXT_LENGTH and LMQ_GPU_OFFLOAD fill in `contextLength` and `gpu.ratio`; set in both
places with different values, it is an error rather than a silent winner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import lmstudio as lms
import msgspec

from workers.error import ConfigError

SETTING = "LMQ_LOAD_CONFIG"


def _config_type(kind: str) -> Any:
    return lms.EmbeddingLoadModelConfig if kind == "embedding" else lms.LlmLoadModelConfig


def _known_keys(config_type: Any) -> dict[str, str]:
    """Every accepted spelling -> the camelCase key (the SDK takes both spellings)."""
    keys: dict[str, str] = {}
    for field in msgspec.structs.fields(config_type):
        keys[field.name] = field.encode_name
        keys[field.encode_name] = field.encode_name
    return keys


def _parse(raw: dict[str, Any] | str | None) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{SETTING} is not valid JSON ({exc}); give a JSON object "
                              "in the SDK's load-config keys, e.g. {\"flashAttention\": true}"
                              ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{SETTING} must be a JSON object, not {type(raw).__name__}")
    return raw


def _validated(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    config_type = _config_type(kind)
    known = _known_keys(config_type)
    unknown = sorted(key for key in config if key not in known)
    if unknown:
        allowed = ", ".join(sorted(set(known.values())))
        raise ConfigError(f"{SETTING}: unknown key {', '.join(map(repr, unknown))} for "
                          f"{'an embedding model' if kind == 'embedding' else 'an LLM'}; the SDK's "
                          f"{config_type.__name__} keys are: {allowed}")
    try:
        checked = config_type.from_dict(config)
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        raise ConfigError(f"{SETTING}: {exc}") from None
    return dict(checked.to_dict())


def _shortcut(config: dict[str, Any], key: str, value: Any, setting: str) -> None:
    if value is None:
        return
    if key in config and config[key] != value:
        raise ConfigError(f"{setting}={value} and {SETTING} {key}={config[key]!r} disagree: "
                          "set it in one place")
    config[key] = value


def build(kind: str, raw: dict[str, Any] | str | None, context_length: int | None,
          gpu_offload: float | str | None) -> dict[str, Any]:
    """The load config the worker sends (module docstring); ConfigError names what is wrong."""
    config = _validated(kind, _parse(raw))
    _shortcut(config, "contextLength", context_length, "LMQ_CONTEXT_LENGTH")
    if gpu_offload is not None:
        gpu = dict(config.get("gpu") or {})
        _shortcut(gpu, "ratio", gpu_offload, "LMQ_GPU_OFFLOAD")
        config["gpu"] = gpu
    return config


@dataclass(frozen=True)
class KvFacts:
    """What admission needs from a load config: the KV cache's element types and place."""

    k_cache_type: str | None  # None: LM Studio's default (f16)
    v_cache_type: str | None
    kv_on_gpu: bool | None  # None: LM Studio's default (on the GPU)


def _cache_type(value: Any) -> str | None:
    # The SDK's type is a name, or a bare bool (the checkbox without a value): only a name
    # changes the element size.
    return value if isinstance(value, str) else None


def kv_facts(config: dict[str, Any]) -> KvFacts:
    """From a camelCase load config (as sent, or as LM Studio reports it)."""
    on_gpu = config.get("offloadKVCacheToGpu")
    return KvFacts(_cache_type(config.get("llamaKCacheQuantizationType")),
                   _cache_type(config.get("llamaVCacheQuantizationType")),
                   on_gpu if isinstance(on_gpu, bool) else None)


def _unchecked(value: Any) -> Any:
    """LM Studio's checkbox values ({"checked": bool, "value": x}) unwrapped."""
    if isinstance(value, dict) and "checked" in value:
        return value.get("value") if value.get("checked") else None
    return value


def parallel_facts(fields: dict[str, Any]) -> tuple[int | None, bool | None]:
    """Parallel predictions and unified KV from an instance's raw load config (LM Studio
    0.4: `llm.load.numParallelSessions`, `llm.load.useUnifiedKvCache`); None: not said."""
    parallel = _unchecked(fields.get("llm.load.numParallelSessions"))
    unified = _unchecked(fields.get("llm.load.useUnifiedKvCache"))
    ok = isinstance(parallel, int) and not isinstance(parallel, bool) and parallel >= 1
    return (parallel if ok else None), (unified if isinstance(unified, bool) else None)


def engine_of(model_format: str | None) -> str:
    """LM Studio runs GGUF files on llama.cpp and MLX models (safetensors) on MLX."""
    return "mlx" if model_format in ("safetensors", "mlx_placeholder") else "llama.cpp"
