"""KV bytes per token of MLX models from their folder's config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers.admission.estimate import model_cost
from workers.admission.gguf_kv import GgufFormatError
from workers.admission.mlx_kv import kv_shape_from_config
from workers.admission.seam import ModelFacts

LLAMA_3_2_1B = {"model_type": "llama", "num_hidden_layers": 16, "hidden_size": 2048,
                "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
                "max_position_embeddings": 131072}


def test_shape_from_the_config() -> None:
    shape = kv_shape_from_config(LLAMA_3_2_1B)
    assert shape.kv_bytes_per_token() == 2 * 16 * 8 * 64 * 2  # 32 KiB, as from its GGUF
    assert shape.context_length == 131072


def test_head_dim_and_kv_heads_when_the_config_leaves_them_out() -> None:
    # Qwen2.5-7B: no head_dim (3584 / 28 = 128), 4 KV heads
    qwen = {"num_hidden_layers": 28, "hidden_size": 3584, "num_attention_heads": 28,
            "num_key_value_heads": 4}
    assert kv_shape_from_config(qwen).kv_bytes_per_token() == 2 * 28 * 4 * 128 * 2
    no_gqa = {"num_hidden_layers": 32, "hidden_size": 3072, "num_attention_heads": 32}
    assert kv_shape_from_config(no_gqa).kv_bytes_per_token() == 2 * 32 * 32 * 96 * 2
    nested = {"model_type": "llava", "text_config": LLAMA_3_2_1B}
    assert kv_shape_from_config(nested).kv_bytes_per_token() == 32768


def test_a_config_without_the_shape_is_refused() -> None:
    with pytest.raises(GgufFormatError, match="num_hidden_layers"):
        kv_shape_from_config({"hidden_size": 2048})


def test_model_cost_reads_the_mlx_folder_with_cache_types(tmp_path: Path) -> None:
    folder = tmp_path / "mlx-community" / "Llama-3.2-1B-Instruct-4bit"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(LLAMA_3_2_1B))
    cost = model_cost(ModelFacts("m", 700_000_000, path=str(folder), engine="mlx"))
    assert (cost.kv_bytes_per_token, cost.kv_source) == (32768, "config.json")
    q8 = model_cost(ModelFacts("m", 700_000_000, path=str(folder), engine="mlx",
                               k_cache_type="q8_0", v_cache_type="q8_0"))
    assert q8.kv_bytes_per_token == 16 * 8 * 64 * 2 * 34 // 32
