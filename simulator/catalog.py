"""Model catalog (from config, with real GGUF files) and loaded instances."""

from __future__ import annotations

import contextlib
import itertools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator import errors
from simulator.config import KV_BYTES_PER_ELEMENT, ModelConfig, SimConfig
from simulator.gguf_file import write_gguf
from simulator.gpu import SlotPool
from simulator.kvconfig import checkbox
from simulator.model_query import best_by_path


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
    parallel: int = 4  # P: predictions at once (numParallelSessions)
    unified_kv: bool = True
    cells_used: int = 0  # llama.cpp, unified: KV cells the running predictions hold

    @property
    def engine(self) -> str:
        return "mlx" if self.model.format == "mlx" else "llama.cpp"

    @property
    def seq_context(self) -> int:
        """Tokens one sequence may hold: n_ctx, or llama.cpp's n_ctx_seq = n_ctx / P."""
        if self.engine == "llama.cpp" and not self.unified_kv:
            return max(1, self.context_length // max(1, self.parallel))
        return self.context_length

    @property
    def kv_load_bytes(self) -> int:
        """KV cache allocated at load: n_ctx cells on llama.cpp, nothing up front on MLX."""
        if self.engine == "mlx" or self.model.type != "llm":
            return 0
        return int(self.kv_bytes_per_token * self.context_length)

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


def _write_mlx_folder(folder: Path, model: ModelConfig) -> str:
    """An MLX model folder: the Hugging Face config.json MLX reads its shape from."""
    folder.mkdir(parents=True, exist_ok=True)
    heads = model.kv_heads if isinstance(model.kv_heads, int) else max(model.kv_heads)
    config = {"model_type": model.architecture, "num_hidden_layers": model.layers,
              "hidden_size": model.embedding_length, "num_attention_heads": model.heads,
              "num_key_value_heads": heads, "head_dim": model.head_dim,
              "max_position_embeddings": model.max_context_length}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return str(folder)


def _link(path: Path, target: str) -> str:
    """A symlink in the models folder to a model file kept elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.symlink_to(Path(target).resolve())
    return str(path)


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
        self._relative_paths = config.server.model_paths == "relative"
        self.paths = {key: self._write(key, m) for key, m in self.models.items()}
        self.instances: dict[str, Instance] = {}
        self._refs = itertools.count(1)

    def _write(self, key: str, model: ModelConfig) -> str:
        if model.gguf_path:  # a real model file (the real engine's llm), linked in
            return _link(self.models_dir / model.publisher / (model.repo or f"{key}-GGUF")
                         / (model.file or Path(model.gguf_path).name), model.gguf_path)
        if model.format == "mlx":
            return _write_mlx_folder(self.models_dir / model.publisher / f"{key}-MLX", model)
        path = (self.models_dir / model.publisher / (model.repo or f"{key}-GGUF")
                / (model.file or f"{key}-Q4_K_M.gguf"))
        if not path.exists():
            write_gguf(path, key, model)
        return str(path)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- lookups -------------------------------------------------------------------
    def add_model(self, key: str, model: ModelConfig) -> None:
        """A model downloaded while running (repository.downloadModel)."""
        self.models[key] = model
        self.paths[key] = self._write(key, model)

    def rel_path(self, key: str) -> str:
        """The model's path relative to the models folder, as LM Studio names it."""
        path = Path(self.paths[key])
        with contextlib.suppress(ValueError):
            return path.relative_to(self.models_dir).as_posix()
        return path.as_posix()

    def wire_path(self, key: str) -> str:
        return self.rel_path(key) if self._relative_paths else self.paths[key]

    def model_key_for(self, name: str) -> str | None:
        """Resolve a model key, a path or a path-style id (`model_query`), any case."""
        if name in self.models:
            return name
        folded = name.casefold()
        for key, path in self.paths.items():
            if folded in (key.casefold(), path.casefold(), Path(path).name.casefold()):
                return key
        return best_by_path(name, ((self.rel_path(k), k) for k in self.models))

    def find_instance(self, query: dict[str, Any], domain: str | None) -> Instance | None:
        """The loaded instance a ModelQuery names: identifier (an instance identifier, a
        model key or a path-style id, any case), path, domain and vision all apply."""
        candidates = [i for i in self.instances.values()
                      if (not domain or i.model.type == domain)
                      and (not query.get("domain") or i.model.type == query["domain"])
                      and (query.get("vision") is None
                           or bool(i.model.vision) == bool(query["vision"]))]
        for name in (query.get("identifier"), query.get("path")):
            if name is not None:
                candidates = self._named(candidates, str(name))
        return candidates[0] if candidates else None

    def _named(self, instances: list[Instance], name: str) -> list[Instance]:
        exact = [i for i in instances if name in (i.identifier, i.key, i.path)]
        if exact:
            return exact
        key = self.model_key_for(name)
        folded = name.casefold()
        return [i for i in instances
                if i.identifier.casefold() == folded or (key is not None and i.key == key)]

    def resolve(self, specifier: dict[str, Any] | None, domain: str | None) -> Instance | None:
        specifier = specifier or {}
        if specifier.get("type") == "instanceReference":
            ref = specifier.get("instanceReference")
            return next((i for i in self.instances.values() if i.reference == ref), None)
        return self.find_instance(specifier.get("query") or {}, domain)

    def new_identifier(self, key: str, wanted: str | None) -> str:
        if wanted:
            if wanted in self.instances:  # LM Studio's wording; no suggestion block
                raise errors.SimError({"title": f"Model with identifier \"{wanted}\" already "
                                                "exists"})
            return wanted
        if key not in self.instances:
            return key
        return next(f"{key}:{n}" for n in itertools.count(2) if f"{key}:{n}" not in self.instances)

    def new_instance(self, key: str, identifier: str, *, context_length: int,
                     offload_ratio: float, seed: int, slots: int, embed_slots: int,
                     load_fields: dict[str, Any], unified_kv: bool = True) -> Instance:
        return Instance(
            identifier=identifier, reference=f"sim-inst-{next(self._refs)}", key=key,
            model=self.models[key], path=self.paths[key], context_length=context_length,
            offload_ratio=offload_ratio, seed=seed, slots=SlotPool(slots),
            embed_slots=SlotPool(embed_slots), load_fields=load_fields, parallel=slots,
            unified_kv=unified_kv)

    # -- wire shapes ---------------------------------------------------------------
    def model_info(self, key: str) -> dict[str, Any]:
        m = self.models[key]
        info: dict[str, Any] = {
            "type": m.type, "modelKey": key,
            "format": "safetensors" if m.format == "mlx" else "gguf",
            "displayName": m.display_name or key, "path": self.wire_path(key),
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
            fields.append({"key": "llm.load.numParallelSessions", "value": inst.parallel})
            fields.append({"key": "llm.load.useUnifiedKvCache", "value": inst.unified_kv})
        # Everything else the instance was loaded with, as LM Studio reports its loaded
        # config (flash attention, K/V cache types, ...).
        reported = {field["key"] for field in fields}
        fields += [{"key": key, "value": value} for key, value in inst.load_fields.items()
                   if key not in reported]
        return {"fields": fields}
