"""KV-cache bytes per token from a GGUF file's metadata, reading the header only.

A GGUF file is: magic, version, tensor count, KV count, the KV metadata pairs, then the
tensor infos and the tensor data. `gguf.GGUFReader` memory-maps the whole file and parses
every tensor info (seconds for a multi-GB file); we never touch tensor infos or data.

Within the KV pairs, the tokenizer's string arrays (a 128k vocabulary and ~280k merges)
cost most: ~0.2 us per string to walk in Python, 50-130 ms for Llama 3. `read_kv_shape`
therefore stops at the first `tokenizer.*` key once `{arch}.block_count` has been seen:
every writer we know of (llama.cpp's convert_hf_to_gguf, llama-quantize, gguf-py's
GGUFWriter in key order) puts the model's hyperparameters before the tokenizer. A file
that puts `block_count` after the tokenizer is still read to its end.

The formula (per token, K and V for every layer):

    kv_bytes_per_token = sum over layers of kv_heads[layer] * (key_length + value_length)
                         * bytes_per_element(kv_cache_type)

- `{arch}.attention.head_count_kv` is an int (same for every layer) or a per-layer array
  (0 for layers without attention); missing means no GQA: `{arch}.attention.head_count`.
- `{arch}.attention.key_length` / `value_length` default to
  `embedding_length / head_count` (the head dimension).
- The KV element type is a load-time choice of LM Studio, not part of the file: f16 (2
  bytes) unless told otherwise. Quantized caches are stored in blocks of 32 elements:
  q8_0 = 34 bytes / 32 = 1.0625, q4_0 = 18 / 32 = 0.5625 bytes per element (the scale per
  block included, so the estimate is never below the real size).

Not modelled (documented limits): sliding-window layers (their KV is capped at the window,
so we over-reserve) and MLA caches (DeepSeek's kv_lora_rank).
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gguf.constants import GGUF_MAGIC, GGUFValueType

# Bytes per element of the KV cache, block scales included (ggml block sizes of 32).
KV_BYTES_PER_ELEMENT: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,  # 4-bit non-linear: 16 bytes of nibbles + an f16 scale per 32
}

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_HEADER_BYTES = 24  # magic, version, tensor count, KV count
# Arrays longer than this are skipped, not decoded (tokenizer vocabularies, merges).
_MAX_DECODED_ARRAY = 4096


class GgufFormatError(ValueError):
    """The file is not a GGUF file we can read (bad magic, big-endian, truncated)."""


@dataclass(frozen=True)
class KvShape:
    """The attention shape of a model, as far as its KV cache is concerned."""

    architecture: str
    block_count: int
    kv_heads_per_layer: tuple[int, ...]
    key_length: int
    value_length: int
    context_length: int | None = None

    def kv_bytes_per_token(self, kv_cache_type: str = "f16", v_cache_type: str | None = None
                           ) -> int:
        """Bytes of K and V cache one token occupies over all layers (rounded up).

        `kv_cache_type` is the K cache's element type, and the V cache's unless
        `v_cache_type` says otherwise (LM Studio quantizes them separately).
        """
        heads = sum(self.kv_heads_per_layer)
        k_bytes = heads * self.key_length * KV_BYTES_PER_ELEMENT[kv_cache_type]
        v_bytes = heads * self.value_length * KV_BYTES_PER_ELEMENT[v_cache_type or kv_cache_type]
        return math.ceil(k_bytes + v_bytes)


class _Cursor:
    """Sequential little-endian reads over a memory map."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.offset = 0

    def unpack(self, fmt: str) -> Any:
        try:
            (value,) = struct.unpack_from(fmt, self.buf, self.offset)
        except struct.error as exc:
            raise GgufFormatError(f"truncated GGUF header at byte {self.offset}") from exc
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        raw = self.buf[self.offset : self.offset + length]
        self.offset += length
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        unpack_from, buf, offset = struct.unpack_from, self.buf, self.offset
        for _ in range(count):
            offset += 8 + unpack_from("<Q", buf, offset)[0]
        self.offset = offset

    def value(self, vtype: GGUFValueType) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            return self.array()
        return self.unpack(_SCALAR_FORMATS[vtype])

    def array(self) -> list[Any] | None:
        item_type = GGUFValueType(self.unpack("<I"))
        count = self.unpack("<Q")
        if count <= _MAX_DECODED_ARRAY:
            return [self.value(item_type) for _ in range(count)]
        if item_type == GGUFValueType.STRING:
            self.skip_strings(count)
        elif item_type == GGUFValueType.ARRAY:
            raise GgufFormatError("nested array too large to skip")
        else:
            self.offset += count * struct.calcsize(_SCALAR_FORMATS[item_type])
        return None  # too long to decode: we never need these


def read_metadata(path: str | Path, *, stop_at_tokenizer: bool = False) -> dict[str, Any]:
    """The KV metadata of a GGUF file; long arrays (vocabularies) come back as None.

    With stop_at_tokenizer, reading ends at the first `tokenizer.*` key that follows the
    architecture's `block_count` (see the module docstring).
    """
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size < _HEADER_BYTES:
            raise GgufFormatError(f"{path}: too short for a GGUF header")
        return _read_open(file, path, stop_at_tokenizer)


def _read_open(file: BinaryIO, path: str | Path, stop_at_tokenizer: bool) -> dict[str, Any]:
    with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        cursor = _Cursor(buf)
        magic = cursor.unpack("<I")
        if magic != GGUF_MAGIC:
            raise GgufFormatError(f"{path}: not a GGUF file (magic {magic:#x})")
        version = cursor.unpack("<I")
        if version not in (2, 3):
            raise GgufFormatError(f"{path}: unsupported GGUF version {version} (big-endian?)")
        cursor.unpack("<Q")  # tensor count: tensors are never read
        kv_count = cursor.unpack("<Q")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = cursor.string()
            if stop_at_tokenizer and key.startswith("tokenizer.") and _has_block_count(metadata):
                break
            metadata[key] = cursor.value(GGUFValueType(cursor.unpack("<I")))
        return metadata


def _has_block_count(metadata: dict[str, Any]) -> bool:
    arch = metadata.get("general.architecture")
    return arch is not None and f"{arch}.block_count" in metadata


def kv_shape(metadata: dict[str, Any]) -> KvShape:
    """The attention shape from GGUF metadata (see the module docstring for defaults)."""
    arch = str(metadata["general.architecture"])

    def field(name: str) -> Any:
        return metadata.get(f"{arch}.{name}")

    block_count = int(field("block_count"))
    heads = field("attention.head_count")
    kv_heads = field("attention.head_count_kv")
    kv_heads = heads if kv_heads is None else kv_heads
    per_layer = _per_layer(kv_heads, block_count)
    max_heads = max(_per_layer(heads, block_count), default=0) if heads is not None else 0
    head_dim = int(field("embedding_length")) // max_heads if max_heads else 0
    key_length = int(field("attention.key_length") or head_dim)
    value_length = int(field("attention.value_length") or key_length)
    if key_length <= 0:
        raise GgufFormatError(f"{arch}: no key_length and no embedding_length/head_count")
    context = field("context_length")
    return KvShape(
        arch,
        block_count,
        per_layer,
        key_length,
        value_length,
        int(context) if context is not None else None,
    )


def _per_layer(value: Any, block_count: int) -> tuple[int, ...]:
    if isinstance(value, list):
        if len(value) != block_count:
            raise GgufFormatError(f"per-layer array of {len(value)} for {block_count} layers")
        return tuple(int(v) for v in value)
    if value is None:
        raise GgufFormatError("no attention.head_count_kv nor attention.head_count")
    return (int(value),) * block_count


def read_kv_shape(path: str | Path) -> KvShape:
    """Read a GGUF file's header and return its attention shape."""
    try:
        return kv_shape(read_metadata(path, stop_at_tokenizer=True))
    except GgufFormatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:  # missing keys, unknown value types
        raise GgufFormatError(f"{path}: unreadable attention metadata ({exc!r})") from exc
