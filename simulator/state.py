"""Everything one simulator shares across connections (lives on the event loop thread)."""

from __future__ import annotations

from typing import Any

from simulator import errors
from simulator.catalog import Catalog, Instance
from simulator.config import SimConfig
from simulator.engine import DeterministicEngine, Engine
from simulator.faults import Faults
from simulator.gpu import OutOfMemoryError, Vram
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
        self.engine: Engine = engine or DeterministicEngine(
            config.timing, forced_reply_tokens=lambda: self.faults.reply_tokens)
        for key, model in config.models.items():
            if model.loaded:
                self.load(key, None, {})

    def load(self, key: str, identifier: str | None, fields: dict[str, Any]) -> Instance:
        """Create an instance and reserve its weights; raises SimError if it does not fit."""
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
            slots=self.config.timing.parallel_slots,
            embed_slots=self.config.timing.embedding_parallel, load_fields=fields)
        try:
            self.vram.reserve(f"weights:{inst.reference}", inst.weight_bytes)
        except OutOfMemoryError as exc:
            raise errors.load_oom(key, exc.needed_bytes, exc.free_bytes) from None
        self.catalog.instances[inst.identifier] = inst
        return inst

    def unload(self, inst: Instance) -> None:
        for channel in list(inst.channels):
            channel.cancel("modelUnloaded")
        self.catalog.instances.pop(inst.identifier, None)
        self.vram.release(f"weights:{inst.reference}")

    def snapshot(self) -> dict[str, Any]:
        return {
            "vram": self.vram.snapshot(),
            "instances": [
                {**self.catalog.instance_info(i), "slotsInUse": i.slots.in_use,
                 "slotsWaiting": i.slots.waiting, "weightBytes": i.weight_bytes}
                for i in self.catalog.instances.values()
            ],
            "faults": self.faults.snapshot(),
            "timing": self.config.timing.model_dump(),
            "modelsDir": str(self.catalog.models_dir),
        }


def _ratio(value: Any, default: float) -> float:
    if value == "max":
        return 1.0
    if value == "off":
        return 0.0
    return float(value) if isinstance(value, (int, float)) else default
