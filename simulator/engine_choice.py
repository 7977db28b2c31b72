"""`--engine NAME`: which engine generates text and vectors.

Apart from `simulator.engine` because the real engine builds on it (and needs the
local-models extra, imported only when chosen).
"""

from __future__ import annotations

from typing import Any

from simulator.config import TimingConfig
from simulator.engine import Engine

ENGINE_NAMES = ("deterministic", "real")


def make_engine(name: str, timing: TimingConfig, real: Any = None) -> Engine | None:
    """The engine for `--engine NAME`; None means the state's default deterministic one.

    `real` is the config's `RealEngineConfig` (threads, context, temperature).
    """
    if name == "deterministic":
        return None
    if name == "real":
        from simulator.real_engine import RealEngine  # needs the local-models extra

        return RealEngine(timing, real)
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINE_NAMES)}")
