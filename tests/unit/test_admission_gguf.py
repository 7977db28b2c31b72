"""KV bytes per token from real GGUF files written with gguf.GGUFWriter."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from workers.admission.gguf_kv import (
    KV_BYTES_PER_ELEMENT,
    GgufFormatError,
    read_kv_shape,
    read_metadata,
)


def write_gguf(path: Path, arch: str = "llama", *, layers: int = 16, heads: int | None = 32,
               kv_heads: int | list[int] | None = 8, key_length: int | None = 64,
               value_length: int | None = None, embedding: int = 2048,
               vocab: int = 0, tensors: int = 0) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(layers)
    writer.add_context_length(131072)
    writer.add_embedding_length(embedding)
    if heads is not None:
        writer.add_head_count(heads)
    if kv_heads is not None:
        writer.add_head_count_kv(kv_heads)
    if key_length is not None:
        writer.add_key_length(key_length)
    if value_length is not None:
        writer.add_value_length(value_length)
    if vocab:
        writer.add_token_list([f"tok{i}" for i in range(vocab)])
        writer.add_token_scores([0.0] * vocab)
    for i in range(tensors):
        writer.add_tensor(f"blk.{i}.w", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_llama_uniform_kv_heads(tmp_path: Path) -> None:
    shape = read_kv_shape(write_gguf(tmp_path / "m.gguf"))
    assert shape.block_count == 16
    assert shape.kv_heads_per_layer == (8,) * 16
    assert (shape.key_length, shape.value_length) == (64, 64)  # value defaults to key
    assert shape.context_length == 131072
    # 2 (K+V) x 16 layers x 8 heads x 64 x 2 bytes = 32 KiB
    assert shape.kv_bytes_per_token() == 32 * 1024
    assert shape.kv_bytes_per_token("f32") == 64 * 1024


def test_per_layer_kv_head_array(tmp_path: Path) -> None:
    heads = [4] * 10 + [0] * 2 + [8] * 16  # some layers without attention
    path = write_gguf(tmp_path / "q.gguf", "qwen2", layers=28, heads=28, kv_heads=heads,
                      key_length=128, embedding=3584)
    shape = read_kv_shape(path)
    assert shape.kv_heads_per_layer == tuple(heads)
    assert shape.kv_bytes_per_token() == sum(heads) * (128 + 128) * 2


def test_distinct_key_and_value_lengths(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "kv.gguf", layers=2, kv_heads=2, key_length=192,
                      value_length=128)
    assert read_kv_shape(path).kv_bytes_per_token() == 2 * 2 * (192 + 128) * 2


def test_head_dim_defaults_to_embedding_over_heads(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "d.gguf", layers=4, heads=16, kv_heads=None,
                      key_length=None, embedding=1024)
    shape = read_kv_shape(path)  # no GQA key: every head has K and V
    assert shape.kv_heads_per_layer == (16,) * 4
    assert shape.key_length == shape.value_length == 64
    assert shape.kv_bytes_per_token() == 4 * 16 * 128 * 2


@pytest.mark.parametrize(("kv_type", "expected"), [
    ("f16", 2.0), ("q8_0", 1.0625), ("q4_0", 0.5625),
])
def test_quantized_kv_types_include_block_scales(kv_type: str, expected: float) -> None:
    assert KV_BYTES_PER_ELEMENT[kv_type] == expected


def test_quantized_cache_rounds_up(tmp_path: Path) -> None:
    shape = read_kv_shape(write_gguf(tmp_path / "m.gguf", layers=1, kv_heads=1, key_length=3))
    assert shape.kv_bytes_per_token("q4_0") == 4  # 6 elements x 0.5625 = 3.375 -> 4


def test_large_vocabulary_and_tensors_are_skipped(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "v.gguf", vocab=50_000, tensors=3)
    meta = read_metadata(path)
    assert meta["tokenizer.ggml.tokens"] is None  # skipped, not decoded
    assert meta["tokenizer.ggml.scores"] is None
    assert read_kv_shape(path).kv_bytes_per_token() == 32 * 1024


def test_same_answer_as_gguf_reader(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "r.gguf", kv_heads=[2, 4, 6, 8], layers=4, tensors=2)
    reader = gguf.GGUFReader(str(path))
    field = reader.fields["llama.attention.head_count_kv"]
    theirs = [int(field.parts[i][0]) for i in field.data]
    assert list(read_kv_shape(path).kv_heads_per_layer) == theirs


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"not a gguf file at all")
    with pytest.raises(GgufFormatError):
        read_kv_shape(path)


def test_truncated_header(tmp_path: Path) -> None:
    full = write_gguf(tmp_path / "t.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(full[:60])
    with pytest.raises(GgufFormatError):
        read_kv_shape(cut)


def test_missing_block_count(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(str(tmp_path / "n.gguf"), "llama")
    writer.add_head_count(4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(GgufFormatError):
        read_kv_shape(tmp_path / "n.gguf")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(GgufFormatError):
        read_kv_shape(path)


def test_hyperparameters_after_the_tokenizer_are_still_found(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(str(tmp_path / "late.gguf"), "llama")
    writer.add_token_list([f"t{i}" for i in range(5000)])
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_embedding_length(256)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    assert read_kv_shape(tmp_path / "late.gguf").kv_bytes_per_token() == 2 * 2 * 64 * 2 * 2


def test_kv_shape_reading_stops_at_the_tokenizer(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "v.gguf", vocab=5000)
    assert "tokenizer.ggml.tokens" in read_metadata(path)
    assert "tokenizer.ggml.tokens" not in read_metadata(path, stop_at_tokenizer=True)
