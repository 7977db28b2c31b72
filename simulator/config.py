"""Simulator configuration: a TOML file (or dict) parsed into pydantic models.

Every field has a default that keeps tests fast but not instant. A dict passed to
`load_config` is deep-merged over the defaults, so `{"timing": {"parallel_slots": 1}}`
changes one knob and keeps the rest. Models are keyed by model key; an override for a
default key merges into that model, a new key adds a model. `default_models = false`
drops the built-in catalog.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from simulator.real_settings import RealEngineConfig

GIB = 1024**3
KvType = Literal["f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "iq4_nl", "q4_0"]
KV_BYTES_PER_ELEMENT = {"f32": 4.0, "f16": 2.0, "q8_0": 1.0, "q5_1": 0.75, "q5_0": 0.6875,
                        "q4_1": 0.5625, "iq4_nl": 0.5625, "q4_0": 0.5}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    type: Literal["llm", "embedding"] = Field(default="llm", description="Model domain.")
    format: Literal["gguf", "mlx"] = Field(
        default="gguf", description="gguf: LM Studio's llama.cpp engine (KV cache reserved "
        "at load); mlx: its MLX engine (a folder with config.json; KV grows per token).")
    display_name: str = Field(default="", description="Shown in ModelInfo; defaults to the key.")
    publisher: str = Field(default="lmstudio-community", description="Folder under models_dir.")
    repo: str = Field(default="", description="Repository folder under the publisher's; "
                      "'' = '<key>-GGUF'. ModelInfo.path = publisher/repo/file.")
    file: str = Field(default="", description="Model file name; '' = '<key>-Q4_K_M.gguf'.")
    size_bytes: int = Field(default=800_000_000, description="Reported file size; VRAM weight.")
    params_string: str = Field(default="1B", description="ModelInfo.paramsString.")
    architecture: str = Field(default="llama", description="GGUF general.architecture.")
    context_length: int = Field(default=4096, description="Default loaded context length.")
    max_context_length: int = Field(default=131072, description="ModelInfo.maxContextLength.")
    embedding_length: int = Field(default=2048, description="Hidden size; embedding dimension.")
    layers: int = Field(default=16, description="GGUF block_count.")
    heads: int = Field(default=32, description="GGUF attention.head_count.")
    kv_heads: int | list[int] = Field(default=8, description="KV heads, or one per layer.")
    head_dim: int = Field(default=64, description="GGUF attention.key_length/value_length.")
    kv_type: KvType = Field(default="f16", description="KV cache element type.")
    loaded: bool = Field(default=False, description="Loaded when the simulator starts.")
    vision: bool = False
    trained_for_tool_use: bool = True
    gguf_path: str = Field(default="", description="Serve this existing GGUF file instead of "
                           "writing a tensor-less one (the real engine runs it).")

    def kv_bytes_per_token(self, k_type: str | None = None, v_type: str | None = None) -> float:
        """2 (K and V) x sum of KV heads over layers x head dim x bytes per element.

        `k_type` / `v_type` override `kv_type` (LM Studio's K/V cache quantization).
        """
        heads = self.kv_heads
        total_kv_heads = sum(heads) if isinstance(heads, list) else heads * self.layers
        k_bytes = KV_BYTES_PER_ELEMENT[k_type or self.kv_type]
        v_bytes = KV_BYTES_PER_ELEMENT[v_type or self.kv_type]
        return total_kv_heads * self.head_dim * (k_bytes + v_bytes)


class TimingConfig(_Strict):
    prefill_tokens_per_s: float = Field(default=5000.0, description="0 = instant prefill.")
    decode_tokens_per_s: float = Field(default=200.0, description="Per slot; 0 = instant.")
    parallel_slots: int = Field(default=4, description="Concurrent predictions per model "
                                "instance (LM Studio's Max Concurrent Predictions, default 4); a "
                                "load's llm.load.numParallelSessions overrides it.")
    unified_kv: bool = Field(default=True, description="llama.cpp: one KV cache of n_ctx cells "
                             "shared by the parallel predictions (each up to n_ctx), else "
                             "n_ctx / P cells each; a load's llm.load.useUnifiedKvCache "
                             "overrides it.")
    embedding_latency_s: float = Field(default=0.002, description="Per embedString call.")
    embedding_tokens_per_s: float = Field(default=0.0, description="Per embedding slot: adds "
                                          "tokens / rate to each embedString; 0 = off.")
    embedding_parallel: int = Field(default=4, description="Concurrent embeddings per instance.")
    load_delay_s: float = Field(default=0.2, description="Time to load a model on request.")
    reply_min_tokens: int = Field(default=8, description="Shortest default reply.")
    reply_max_tokens: int = Field(default=40, description="Longest default reply.")


class GpuConfig(_Strict):
    vram_bytes: int = Field(default=24 * GIB, description="Simulated VRAM size.")
    offload_ratio: float = Field(default=1.0, description="Default fraction of weights on GPU.")


class FailRule(_Strict):
    endpoint: str = Field(description="Endpoint name, e.g. predict, embedString.")
    nth: int = Field(default=1, description="Fail the nth request to it (counted from set/reset).")
    title: str = Field(default="Simulated failure", description="Error title sent.")


class FaultConfig(_Strict):
    delay_s: float = Field(default=0.0, description="Extra delay before handling a request.")
    delay_endpoints: list[str] = Field(default_factory=list, description="[] = all.")
    fail: list[FailRule] = Field(default_factory=list, description="Fail-the-nth rules.")
    drop_after_fragments: int | None = Field(default=None, description="Abort socket after K.")
    drop_times: int | None = Field(default=None, description="Predictions to drop; None = all.")
    slow_prefill_s: float = Field(default=0.0, description="Extra prefill time per prediction.")
    cancel_lag_fragments: int = Field(default=0, description="Tokens still sent after a cancel.")
    reply_tokens: int | None = Field(default=None, description="Force reply length (long reply).")


class ServerConfig(_Strict):
    models_dir: str = Field(default="", description="Where GGUF files go; '' = a temp dir.")
    log_max_entries: int = Field(default=100_000, description="Message log ring size.")
    model_paths: Literal["relative", "absolute"] = Field(
        default="relative", description="ModelInfo.path: relative to models_dir as LM Studio "
        "reports it, or the absolute file path (for a client on this host that reads the "
        "simulator's GGUF files without knowing models_dir).")
    jit_auto_evict: bool = Field(default=True, description="LM Studio's JIT auto-evict: a "
                                 "getOrLoad that loads first unloads other JIT-loaded models.")
    error_style: Literal["errorPacket", "channelError"] = Field(
        default="errorPacket", description="How predict failures (OOM, context) are sent."
    )


class PresetConfig(_Strict):
    name: str = Field(default="", description="Display name; defaults to the identifier.")
    fields: dict[str, Any] = Field(default_factory=dict, description="Prediction config "
                                   "fields (server keys, e.g. llm.prediction.temperature).")


class SimConfig(_Strict):
    server: ServerConfig = Field(default_factory=lambda: ServerConfig())
    timing: TimingConfig = Field(default_factory=lambda: TimingConfig())
    gpu: GpuConfig = Field(default_factory=lambda: GpuConfig())
    faults: FaultConfig = Field(default_factory=lambda: FaultConfig())
    engine: Literal["deterministic", "real"] = Field(
        default="deterministic", description="Generation engine; `real` = small real models "
        "on the CPU, and the built-in catalog becomes those models (real_models.py).")
    real: RealEngineConfig = Field(default_factory=lambda: RealEngineConfig())
    default_models: bool = Field(default=True, description="Include the built-in catalog.")
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    presets: dict[str, PresetConfig] = Field(default_factory=dict, description="Prediction "
                                             "presets by identifier (fuzzyPresetIdentifier).")
    repository: dict[str, ModelConfig] = Field(default_factory=dict, description="Models "
                                               "searchModels finds and downloadModel adds.")


DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "llama-3.2-1b-instruct": dict(
        type="llm", display_name="Llama 3.2 1B Instruct", size_bytes=807_694_464,
        params_string="1B", architecture="llama", context_length=4096,
        max_context_length=131072, embedding_length=2048, layers=16, heads=32,
        kv_heads=8, head_dim=64, loaded=True, publisher="hugging-quants",
        repo="Llama-3.2-1B-Instruct-GGUF", file="llama-3.2-1b-instruct-q4_k_m.gguf",
    ),
    "qwen2.5-7b-instruct": dict(
        type="llm", display_name="Qwen2.5 7B Instruct", size_bytes=4_683_073_952,
        params_string="7B", architecture="qwen2", context_length=4096,
        max_context_length=32768, embedding_length=3584, layers=28, heads=28,
        kv_heads=[4] * 28, head_dim=128, loaded=False, repo="Qwen2.5-7B-Instruct-GGUF",
        file="Qwen2.5-7B-Instruct-Q4_K_M.gguf",
    ),
    "text-embedding-nomic-embed-text-v1.5": dict(
        type="embedding", display_name="Nomic Embed Text v1.5", size_bytes=84_106_624,
        publisher="nomic-ai", params_string="137M", architecture="nomic-bert",
        context_length=2048, max_context_length=2048, embedding_length=768, layers=12,
        heads=12, kv_heads=12, head_dim=64, loaded=True, trained_for_tool_use=False,
        repo="nomic-embed-text-v1.5-GGUF", file="nomic-embed-text-v1.5.Q4_K_M.gguf",
    ),
}
# Not downloaded at start: what searchModels finds beyond the catalog, and downloadModel adds.
DEFAULT_REPOSITORY: dict[str, dict[str, Any]] = {
    "smollm2-135m-instruct": dict(
        type="llm", display_name="SmolLM2 135M Instruct", size_bytes=101_029_408,
        publisher="lmstudio-community", repo="SmolLM2-135M-Instruct-GGUF",
        file="SmolLM2-135M-Instruct-Q4_K_M.gguf", params_string="135M",
        architecture="llama", context_length=4096, max_context_length=8192,
        embedding_length=576, layers=30, heads=9, kv_heads=3, head_dim=64,
        trained_for_tool_use=False,
    ),
    "qwen2.5-0.5b-instruct": dict(
        type="llm", display_name="Qwen2.5 0.5B Instruct", size_bytes=397_808_192,
        publisher="lmstudio-community", repo="Qwen2.5-0.5B-Instruct-GGUF",
        file="Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", params_string="0.5B",
        architecture="qwen2", context_length=4096, max_context_length=32768,
        embedding_length=896, layers=24, heads=14, kv_heads=2, head_dim=64,
    ),
}


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_file(path: str | Path) -> dict[str, Any]:
    text = Path(path).read_text()
    if str(path).endswith(".json"):
        return dict(json.loads(text))
    return tomllib.loads(text)


def load_config(source: SimConfig | dict[str, Any] | str | Path | None = None,
                engine: str | None = None) -> SimConfig:
    """Build a config from None (defaults), a dict of overrides, or a TOML/JSON path.

    `engine` (e.g. from `--engine`) overrides the source's `engine`; under `real` the
    built-in catalog is the real models' (simulator/real_models.py), not DEFAULT_MODELS.
    """
    if isinstance(source, SimConfig) and engine in (None, source.engine):
        return source
    if isinstance(source, SimConfig):
        source = source.model_dump()
    raw = _read_file(source) if isinstance(source, (str, Path)) else dict(source or {})
    if engine is not None:
        raw["engine"] = engine
    if raw.get("default_models", True):
        raw["models"] = _deep_merge(_default_models(raw), raw.get("models") or {})
        raw["repository"] = _deep_merge(DEFAULT_REPOSITORY, raw.get("repository") or {})
    return SimConfig.model_validate(raw)


def _default_models(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if raw.get("engine") != "real":
        return DEFAULT_MODELS
    from simulator.real_models import real_catalog

    context = (raw.get("real") or {}).get("context_length", RealEngineConfig().context_length)
    return real_catalog(int(context))
