"""Model catalog (from config, with real GGUF files) and loaded instances."""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator import errors
from simulator.config import KV_BYTES_PER_ELEMENT, ModelConfig, SimConfig
from simulator.gguf_file import write_gguf
from simulator.gpu import SlotPool
from simulator.kvconfig import checkbox


@dataclass
class Instance:
    identifier: str
    reference: str
    key: str
    model: ModelConfig
    path: str
    context_length: int
    offload_ratio: float
    seed: int
    slots: SlotPool
    embed_slots: SlotPool
    load_fields: dict[str, Any] = field(default_factory=dict)
    channels: set[Any] = field(default_factory=set)  # predictions running on it

    @property
    def weight_bytes(self) -> int:
        return int(self.model.size_bytes * self.offload_ratio)

    @property
    def kv_bytes_per_token(self) -> float:
        """VRAM per context token; 0 when the load config keeps the KV cache in RAM."""
        if self.load_fields.get("llm.load.offloadKVCacheToGpu") is False:
            return 0.0
        return self.model.kv_bytes_per_token(
            _cache_type(self.load_fields.get("llm.load.llama.kCacheQuantizationType")),
            _cache_type(self.load_fields.get("llm.load.llama.vCacheQuantizationType")))


def _cache_type(value: Any) -> str | None:
    """A checkbox {"checked": true, "value": "q8_0"} naming a known KV element type."""
    kind = checkbox(value)
    return kind if kind in KV_BYTES_PER_ELEMENT else None


class Catalog:
    """Downloaded models (config) plus the instances currently loaded."""

    def __init__(self, config: SimConfig) -> None:
        self.models = dict(config.models)
        # A temp dir we create is ours to delete (close(), or at interpreter exit).
        self._tmp = None if config.server.models_dir else tempfile.TemporaryDirectory(
            prefix="lmq-sim-models-")
        root = config.server.models_dir or (self._tmp.name if self._tmp else "")
        self.models_dir = Path(root).resolve()
        self.paths = {key: self._write(key, m) for key, m in self.models.items()}
        self.instances: dict[str, Instance] = {}
        self._refs = itertools.count(1)

    def _write(self, key: str, model: ModelConfig) -> str:
        if model.gguf_path:  # a real model file (the real engine's llm)
            return model.gguf_path
        path = self.models_dir / model.publisher / f"{key}-GGUF" / f"{key}-Q4_K_M.gguf"
        if not path.exists():
            write_gguf(path, key, model)
        return str(path)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- lookups -------------------------------------------------------------------
    def model_key_for(self, name: str) -> str | None:
        """Resolve a model key or path (as getOrLoad / loadModel accept)."""
        if name in self.models:
            return name
        for key, path in self.paths.items():
            if name in (path, Path(path).name) or path.endswith("/" + name):
                return key
        return None

    def find_instance(self, query: dict[str, Any], domain: str | None) -> Instance | None:
        ident = query.get("identifier")
        path = query.get("path")
        for inst in self.instances.values():
            if domain and inst.model.type != domain:
                continue
            if query.get("domain") and inst.model.type != query["domain"]:
                continue
            if ident is not None and ident not in (inst.identifier, inst.key):
                continue
            if path is not None and path != inst.path:
                continue
            return inst
        return None

    def resolve(self, specifier: dict[str, Any] | None, domain: str | None) -> Instance | None:
        specifier = specifier or {}
        if specifier.get("type") == "instanceReference":
            ref = specifier.get("instanceReference")
            return next((i for i in self.instances.values() if i.reference == ref), None)
        return self.find_instance(specifier.get("query") or {}, domain)

    def new_identifier(self, key: str, wanted: str | None) -> str:
        if wanted:
            if wanted in self.instances:
                raise errors.SimError({"title": f"Identifier \"{wanted}\" is already in use",
                                       "suggestion": "Pick another identifier or unload it."})
            return wanted
        if key not in self.instances:
            return key
        return next(f"{key}:{n}" for n in itertools.count(2) if f"{key}:{n}" not in self.instances)

    def new_instance(self, key: str, identifier: str, *, context_length: int,
                     offload_ratio: float, seed: int, slots: int, embed_slots: int,
                     load_fields: dict[str, Any]) -> Instance:
        return Instance(
            identifier=identifier, reference=f"sim-inst-{next(self._refs)}", key=key,
            model=self.models[key], path=self.paths[key], context_length=context_length,
            offload_ratio=offload_ratio, seed=seed, slots=SlotPool(slots),
            embed_slots=SlotPool(embed_slots), load_fields=load_fields)

    # -- wire shapes ---------------------------------------------------------------
    def model_info(self, key: str) -> dict[str, Any]:
        m = self.models[key]
        info: dict[str, Any] = {
            "type": m.type, "modelKey": key, "format": "gguf",
            "displayName": m.display_name or key, "path": self.paths[key],
            "sizeBytes": m.size_bytes, "paramsString": m.params_string,
            "architecture": m.architecture, "maxContextLength": m.max_context_length,
        }
        if m.type == "llm":
            info["vision"] = m.vision
            info["trainedForToolUse"] = m.trained_for_tool_use
        return info

    def instance_info(self, inst: Instance) -> dict[str, Any]:
        info = self.model_info(inst.key)
        info.update(identifier=inst.identifier, instanceReference=inst.reference,
                    contextLength=inst.context_length)
        return info

    def load_config_kv(self, inst: Instance) -> dict[str, Any]:
        prefix = "llm" if inst.model.type == "llm" else "embedding"
        fields: list[dict[str, Any]] = [
            {"key": f"{prefix}.load.contextLength", "value": inst.context_length},
            {"key": f"{prefix}.load.llama.acceleration.offloadRatio", "value": inst.offload_ratio},
            {"key": "load.gpuSplitConfig", "value": {"strategy": "evenly", "disabledGpus": [],
                                                     "priority": [], "customRatio": []}},
        ]
        if inst.model.type == "llm":
            fields.append({"key": "llm.load.seed", "value": {"checked": True, "value": inst.seed}})
        # Everything else the instance was loaded with, as LM Studio reports its loaded
        # config (flash attention, K/V cache types, ...).
        reported = {field["key"] for field in fields}
        fields += [{"key": key, "value": value} for key, value in inst.load_fields.items()
                   if key not in reported]
        return {"fields": fields}
