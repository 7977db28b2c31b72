"""The KV shape of an MLX model from its folder's Hugging Face `config.json`.

MLX keeps K and V per layer for `num_key_value_heads` heads of `head_dim` each; configs
without `head_dim` imply hidden_size / num_attention_heads, and without
`num_key_value_heads` one KV head per attention head (no grouped-query attention).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workers.admission.gguf_kv import GgufFormatError, KvShape

CONFIG_NAME = "config.json"


def config_path(path: Path) -> Path | None:
    """The config.json of an MLX model folder (or the file itself), if there is one."""
    candidate = path / CONFIG_NAME if path.is_dir() else path
    return candidate if candidate.name == CONFIG_NAME and candidate.is_file() else None


def _int(config: dict[str, Any], key: str) -> int | None:
    value = config.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def kv_shape_from_config(config: dict[str, Any]) -> KvShape:
    """KvShape from a config.json's fields (GgufFormatError naming what is missing)."""
    config = config.get("text_config", config)  # vision-language models nest the LM's
    layers = _int(config, "num_hidden_layers")
    heads = _int(config, "num_attention_heads")
    kv_heads = _int(config, "num_key_value_heads") or heads
    head_dim = _int(config, "head_dim")
    hidden = _int(config, "hidden_size")
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    if not layers or not kv_heads or not head_dim:
        raise GgufFormatError("config.json lacks num_hidden_layers, num_key_value_heads / "
                              "num_attention_heads, or head_dim / hidden_size")
    return KvShape(str(config.get("model_type", "")), layers, (kv_heads,) * layers,
                   head_dim, head_dim, _int(config, "max_position_embeddings"))


def read_config_shape(path: Path) -> KvShape:
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise GgufFormatError(f"{path} is not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise GgufFormatError(f"{path} is not a JSON object")
    return kv_shape_from_config(config)
