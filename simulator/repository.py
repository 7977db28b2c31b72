"""The repository namespace: searchModels, getModelDownloadOptions, downloadModel.

The simulated model hub holds the configured catalog (already downloaded) plus the
`[repository]` models (default: two small ones). A search matches its term against a
model's key, repo and display name (any case); each result names one repo
(`publisher/repo`, type `hf`) with one download option, its GGUF file. A download sends
`downloadProgress` packets over `timing.load_delay_s`, then `startFinalizing`, writes the
file into the models folder, and succeeds with the model key to load; from then on the
model is in `listDownloadedModels` and loadable like any other.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from simulator.catalog import Catalog
from simulator.config import ModelConfig
from simulator.connection import Channel, Connection
from simulator.errors import SimError

_PROGRESS_STEPS = 4
_MAX_LIMIT = 25


def _hub(conn: Connection) -> dict[str, ModelConfig]:
    """Every model the hub offers, downloaded ones first."""
    catalog = conn.state.catalog
    return {**catalog.models, **{k: m for k, m in conn.state.config.repository.items()
                                 if k not in catalog.models}}


def _repo_id(key: str, model: ModelConfig) -> str:
    return f"{model.publisher}/{model.repo or f'{key}-GGUF'}"


def _file_name(key: str, model: ModelConfig) -> str:
    return model.file or f"{key}-Q4_K_M.gguf"


def _quantization(file_name: str) -> str | None:
    stem = file_name.rsplit(".", 1)[0]
    for sep in ("-", "."):
        tail = stem.rsplit(sep, 1)[-1]
        if tail.upper().startswith(("Q", "IQ", "F16", "BF16", "F32")):
            return tail.upper()
    return None


async def search_models(conn: Connection, param: Any) -> Any:
    opts = (param or {}).get("opts") or {}
    term = str(opts.get("searchTerm") or "").casefold()
    limit = min(int(opts.get("limit") or _MAX_LIMIT), _MAX_LIMIT)
    wanted = opts.get("compatibilityTypes")
    results = []
    for key, model in _hub(conn).items():
        repo = _repo_id(key, model)
        names = (key, repo, model.display_name)
        if term and not any(term in n.casefold() for n in names if n):
            continue
        if wanted and "gguf" not in wanted:
            continue
        results.append({"name": repo, "identifier": {"type": "hf", "identifier": repo},
                        "exact": bool(term) and term in (key.casefold(), repo.casefold()),
                        "staffPick": model.publisher == "lmstudio-community"})
    return {"results": results[:limit]}


def _option(conn: Connection, key: str, model: ModelConfig) -> dict[str, Any]:
    file_name = _file_name(key, model)
    vram = conn.state.vram
    fit = ("fullGPUOffload" if model.size_bytes <= vram.free_bytes else
           "partialGPUOffload" if model.size_bytes <= vram.total_bytes else "fitWithoutGPU")
    option: dict[str, Any] = {
        "name": file_name, "sizeBytes": model.size_bytes, "fitEstimation": fit,
        "downloadIdentifier": f"{_repo_id(key, model)}/{file_name}",
        "indexedModelIdentifier": f"{_repo_id(key, model)}/{file_name}", "recommended": True}
    quantization = _quantization(file_name)
    if quantization:
        option["quantization"] = quantization
    return option


async def get_model_download_options(conn: Connection, param: Any) -> Any:
    identifier = ((param or {}).get("modelSearchResultIdentifier") or {}).get("identifier")
    return {"results": [_option(conn, key, model) for key, model in _hub(conn).items()
                        if _repo_id(key, model) == identifier]}


def _download_target(conn: Connection, download_id: str) -> tuple[str, ModelConfig]:
    for key, model in _hub(conn).items():
        if f"{_repo_id(key, model)}/{_file_name(key, model)}" == download_id:
            return key, model
    raise SimError({"title": f"No download option found for \"{download_id}\""})


async def download_model(channel: Channel) -> None:
    conn = channel.conn
    key, model = _download_target(conn, str(channel.param.get("downloadIdentifier", "")))
    catalog: Catalog = conn.state.catalog
    if key not in catalog.models:
        await _send_progress(channel, model.size_bytes, conn.state.config.timing.load_delay_s)
        await channel.send({"type": "startFinalizing"})
        catalog.add_model(key, model)
    await channel.send({"type": "success", "defaultIdentifier": key})
    await channel.close()


async def _send_progress(channel: Channel, total_bytes: int, duration_s: float) -> None:
    started = time.monotonic()
    for step in range(1, _PROGRESS_STEPS + 1):
        if duration_s > 0:
            await asyncio.sleep(duration_s / _PROGRESS_STEPS)
        elapsed_s = max(time.monotonic() - started, 1e-6)
        done = total_bytes * step // _PROGRESS_STEPS
        await channel.send({"type": "downloadProgress", "update": {
            "downloadedBytes": done, "totalBytes": total_bytes,
            "speedBytesPerSecond": done / elapsed_s}})


RPCS: dict[str, Any] = {"searchModels": search_models,
                        "getModelDownloadOptions": get_model_download_options}
CHANNELS: dict[str, Any] = {"downloadModel": download_model}
