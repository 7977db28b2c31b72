"""Write a tensor-less GGUF file carrying a model's architecture metadata."""

from __future__ import annotations

from pathlib import Path

import gguf

from simulator.config import ModelConfig


def write_gguf(path: Path, key: str, model: ModelConfig) -> None:
    arch = model.architecture
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)  # adds general.architecture itself
    try:
        writer.add_name(model.display_name or key)
        writer.add_block_count(model.layers)
        writer.add_context_length(model.max_context_length)
        writer.add_embedding_length(model.embedding_length)
        writer.add_head_count(model.heads)
        writer.add_head_count_kv(model.kv_heads)
        writer.add_key_length(model.head_dim)
        writer.add_value_length(model.head_dim)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
