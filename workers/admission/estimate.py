"""What a model costs in GPU memory: weights, and KV cache per token.

KV bytes per token, in order of preference:

1. the model's GGUF file, or an MLX model folder's config.json (`mlx_kv`), when readable
   from this host (`gguf_kv`): exact, with the K and V
   cache types the model is loaded with (`llamaK/VCacheQuantizationType` in
   LMQ_LOAD_CONFIG; f16 by default);
2. `LMQ_KV_BYTES_PER_TOKEN`, when set: the operator knows better than a guess;
3. an estimate from the file size (`estimate_kv_bytes_per_token`), documented below, scaled
   by the K and V types' bytes per element against f16's.

A model loaded with `offloadKVCacheToGpu: false` keeps its KV cache in system memory: it
costs the GPU budget nothing per token (source "off GPU").

The estimate assumes a dense decoder quantized at ~4.8 bits per weight (Q4_K_M, LM
Studio's usual download) with the usual transformer proportions:

    params        = size_bytes * 8 / 4.8
    params        ~ 12 * layers * d_model^2        (attention + MLP weights)
    d_model       ~ 128 * layers                   (Llama 1B/8B: 2048/16, 4096/32)
    => d_model    = (128 * params / 12) ** (1/3),  layers = d_model / 128
    kv_dim        = d_model / 4                    (grouped-query attention, 4 q-heads per kv)
    kv_bytes_per_token = 2 (K, V) * layers * kv_dim * 2 (f16)

It lands above the truth for most GQA models (Llama 3.2 1B: ~45 KiB vs 32; Llama 3 8B:
~150 vs 128; Qwen2.5 7B: ~148 vs 56) and below it for models without GQA (Phi-3 mini:
~95 vs 384 KiB): for those, set LMQ_KV_BYTES_PER_TOKEN.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from workers.admission.gguf_kv import (
    KV_BYTES_PER_ELEMENT,
    GgufFormatError,
    KvShape,
    read_kv_shape,
)
from workers.admission.mlx_kv import config_path, read_config_shape
from workers.admission.seam import ModelFacts

log = logging.getLogger(__name__)

ESTIMATE_BITS_PER_WEIGHT = 4.8
ESTIMATE_LAYER_WIDTH = 128  # d_model per layer
ESTIMATE_GQA_GROUP = 4
# Where LM Studio keeps models when a ModelInfo path is relative to its models folder.
MODEL_DIRS = ("~/.lmstudio/models", "~/.cache/lm-studio/models")


@dataclass(frozen=True)
class ModelCost:
    """GPU bytes a model costs: weights once, KV per token per prediction."""

    model_key: str
    weights_bytes: int
    kv_bytes_per_token: int
    kv_source: str  # "gguf", "config.json", "setting", "estimate" or "off GPU"
    context_length: int | None
    load_kv_bytes: int = 0  # KV cache allocated at load (llama.cpp: n_ctx cells)


def weights_bytes(facts: ModelFacts) -> int:
    """Weights in GPU memory: the file size times the offload ratio (None: all on GPU)."""
    ratio = 1.0 if facts.offload_ratio is None else min(max(facts.offload_ratio, 0.0), 1.0)
    return math.ceil(facts.size_bytes * ratio)


def estimate_kv_bytes_per_token(size_bytes: int) -> int:
    """The size-based estimate of the module docstring (f16 cache)."""
    params = size_bytes * 8 / ESTIMATE_BITS_PER_WEIGHT
    d_model = float((ESTIMATE_LAYER_WIDTH * params / 12) ** (1 / 3))
    layers = d_model / ESTIMATE_LAYER_WIDTH
    kv_dim = d_model / ESTIMATE_GQA_GROUP
    return max(1, math.ceil(2 * layers * kv_dim * 2))


def find_gguf(path: str | None) -> Path | None:
    """The model's file (GGUF) or folder (MLX) on this host: the path as given, or under LM
    Studio's model folders."""
    if not path:
        return None
    candidates = [Path(path).expanduser()]
    if not candidates[0].is_absolute():
        candidates += [Path(d).expanduser() / path for d in MODEL_DIRS]
    for candidate in candidates:
        if candidate.is_file() or config_path(candidate) is not None:
            return candidate
    return None


def read_shape(facts: ModelFacts) -> tuple[KvShape, str] | None:
    """The model's KV shape and where it came from, or None when not readable here."""
    path = find_gguf(facts.path)
    if path is None:
        return None
    config = config_path(path)
    try:
        if config is not None:
            return read_config_shape(config), "config.json"
        return read_kv_shape(path), "gguf"
    except (OSError, GgufFormatError) as exc:
        log.warning("cannot read the KV shape of %s (%s): %s", facts.model_key, path, exc)
        return None


def model_cost(facts: ModelFacts, kv_bytes_setting: int | None = None) -> ModelCost:
    """Weights and KV bytes per token of a model (sources in the module docstring)."""
    found = read_shape(facts)
    context = facts.context_length
    k_type, v_type = facts.k_cache_type or "f16", facts.v_cache_type or "f16"
    if found is not None:
        shape, source = found
        kv = shape.kv_bytes_per_token(k_type, v_type)
        context = context or shape.context_length
    elif kv_bytes_setting:
        kv, source = kv_bytes_setting, "setting"
    else:
        f16 = estimate_kv_bytes_per_token(facts.size_bytes)
        share = (KV_BYTES_PER_ELEMENT[k_type] + KV_BYTES_PER_ELEMENT[v_type]) / 4.0
        kv, source = max(1, math.ceil(f16 * share)), "estimate"
    if facts.kv_on_gpu is False:
        kv, source = 0, "off GPU"
    return ModelCost(facts.model_key, weights_bytes(facts), kv, source, context)
