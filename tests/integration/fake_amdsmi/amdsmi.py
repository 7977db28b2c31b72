"""A stand-in for AMD's `amdsmi` Python package on machines without an AMD GPU, so that the
worker's AMD path (import, init, handles, VRAM totals, shut down) runs in a real worker.
Only the calls `workers.admission.host_memory` makes are here. From the environment:
    FAKE_AMDSMI_TOTALS   comma-separated VRAM of each GPU in bytes ("" = no GPU)
"""

from __future__ import annotations

import os
from enum import Enum


class AmdSmiException(Exception):  # noqa: N818 (amdsmi's own name)
    pass


class AmdSmiMemoryType(Enum):
    VRAM = 0
    VIS_VRAM = 1
    GTT = 2


def _totals() -> list[int]:
    text = os.environ.get("FAKE_AMDSMI_TOTALS", "")
    return [int(part) for part in text.split(",") if part]


def amdsmi_init() -> None:
    return None


def amdsmi_shut_down() -> None:
    return None


def amdsmi_get_processor_handles() -> list[int]:
    return list(range(len(_totals())))


def amdsmi_get_gpu_memory_total(handle: int, mem_type: AmdSmiMemoryType) -> int:
    if mem_type is not AmdSmiMemoryType.VRAM:
        raise AmdSmiException(f"unexpected memory type {mem_type}")
    return _totals()[handle]
