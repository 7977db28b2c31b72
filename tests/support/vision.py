"""A simulator that also serves a loaded vision model, as LM Studio lists one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from simulator.testing import RunningSimulator, running_simulator

VISION = "qwen2-vl-2b-instruct"


@contextmanager
def simulator_with_vision(*, in_process: bool = True) -> Iterator[RunningSimulator]:
    config = {"models": {VISION: {"type": "llm", "vision": True, "loaded": True,
                                  "architecture": "qwen2vl"}}}
    with running_simulator(config, in_process=in_process) as running:
        yield running
