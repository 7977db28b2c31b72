"""GPU-memory-aware admission (placeholder until the admission module lands: admits all)."""

from __future__ import annotations

from workers.gate import Gate, ModelFacts, NullGate
from workers.settings import Settings


def build_gate(settings: Settings, facts: ModelFacts) -> Gate:
    return NullGate()
