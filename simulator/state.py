"""Everything one simulator shares across connections (lives on the event loop thread)."""

from __future__ import annotations

from typing import Any

from simulator import errors
from simulator.catalog import Catalog, Instance
from simulator.config import SimConfig
from simulator.engine import DeterministicEngine, Engine
from simulator.faults import Faults
from simulator.gpu import Vram
from simulator.jit import Lifetimes
from simulator.kvconfig import checkbox
from simulator.log import MessageLog
from simulator.upload import Uploads


class SimState:
    def __init__(self, config: SimConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.catalog = Catalog(config)
        self.vram = Vram(config.gpu.vram_bytes)
        self.faults = Faults(config.faults)
        self.log = MessageLog(config.server.log_max_entries)
        self.uploads = Uploads()
        self.lifetimes = Lifetimes(self)
        self.engine: Engine = engine or DeterministicEngine(
            config.timing, forced_reply_tokens=lambda: self.faults.reply_tokens)
        for key, model in config.models.items():
            if model.loaded:
                self.load(key, None, {})

    def load(self, key: str, identifier: str | None, fields: dict[str, Any]) -> Instance:
        """Create an instance and reserve its weights, and on llama.cpp its KV cache for
        n_ctx cells (`simulator.kv_cells`); raises SimError if they do not fit."""
        model = self.catalog.models[key]
        prefix = "llm" if model.type == "llm" else "embedding"
        ratio = _ratio(fields.get(f"{prefix}.load.llama.acceleration.offloadRatio"),
                       self.config.gpu.offload_ratio)
        seed = fields.get("llm.load.seed")
        inst = self.catalog.new_instance(
            key, self.catalog.new_identifier(key, identifier),
            context_length=int(fields.get(f"{prefix}.load.contextLength") or model.context_length),
            offload_ratio=ratio,
            seed=int(seed.get("value", 0) if isinstance(seed, dict) else seed or 0),
            slots=_parallel(fields.get("llm.load.numParallelSessions"),
                            self.config.timing.parallel_slots),
            embed_slots=self.config.timing.embedding_parallel, load_fields=fields,
            unified_kv=bool(checkbox(fields.get("llm.load.useUnifiedKvCache"),
                                     self.config.timing.unified_kv)))
        needed = inst.weight_bytes + inst.kv_load_bytes
        if needed > self.vram.free_bytes:
            raise errors.load_oom(key, needed, self.vram.free_bytes)
        self.vram.reserve(f"weights:{inst.reference}", inst.weight_bytes)
        self.vram.reserve(f"kvcache:{inst.reference}", inst.kv_load_bytes)
        self.catalog.instances[inst.identifier] = inst
        return inst

    def unload(self, inst: Instance) -> None:
        self.lifetimes.forget(inst)
        for channel in list(inst.channels):
            channel.cancel("modelUnloaded")
        self.catalog.instances.pop(inst.identifier, None)
        self.vram.release(f"weights:{inst.reference}")
        self.vram.release(f"kvcache:{inst.reference}")

    def snapshot(self) -> dict[str, Any]:
        return {
            "vram": self.vram.snapshot(),
            "instances": [
                {**self.catalog.instance_info(i), "slotsInUse": i.slots.in_use,
                 "slotsWaiting": i.slots.waiting, "weightBytes": i.weight_bytes,
                 "engine": i.engine, "parallel": i.parallel, "unifiedKv": i.unified_kv,
                 "kvCellsUsed": i.cells_used, "kvLoadBytes": i.kv_load_bytes}
                for i in self.catalog.instances.values()
            ],
            "faults": self.faults.snapshot(),
            "timing": self.config.timing.model_dump(),
            "modelsDir": str(self.catalog.models_dir),
        }


def _parallel(value: Any, default: int) -> int:
    value = checkbox(value)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 1 \
        else default


def _ratio(value: Any, default: float) -> float:
    if value == "max":
        return 1.0
    if value == "off":
        return 0.0
    return float(value) if isinstance(value, (int, float)) else default
