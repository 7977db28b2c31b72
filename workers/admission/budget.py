"""The GPU memory admission may hand out: the GPU's memory minus a reserve.

The GPU's memory is `LMQ_GPU_MEMORY` when set; otherwise NVML's total over all GPUs
(`nvidia-ml-py`, the `nvml` extra), but only when LM Studio runs on this host (a loopback
or own address in `LMQ_LMSTUDIO_HOST`): NVML sees the local GPUs, not LM Studio's.
Without either, `gpu_budget` raises BudgetUnknownError saying why NVML gave no answer (LM
Studio on another host, nvidia-ml-py not installed, NVML not starting — no driver — or no
GPU) and to set LMQ_GPU_MEMORY; the worker exits with that line (`workers.lifecycle`).
The reserve is `LMQ_GPU_RESERVE` when set, else max(1 GiB, 10% of the GPU memory): room
for LM Studio's compute buffers, the desktop, and models loaded by no worker of ours.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from typing import Any

from workers.error import BudgetUnknownError
from workers.settings import Settings

GIB = 1024**3
MIN_RESERVE_BYTES = GIB
RESERVE_FRACTION = 0.10
_LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


@dataclass(frozen=True)
class Budget:
    gpu_memory_bytes: int
    reserve_bytes: int
    source: str  # "setting" or "nvml"
    detail: str = ""  # for the log: "LMQ_GPU_MEMORY" or "NVML, 1 GPU (name: bytes)"

    @property
    def usable_bytes(self) -> int:
        return max(0, self.gpu_memory_bytes - self.reserve_bytes)


@dataclass(frozen=True)
class NvmlReading:
    """NVML's answer: the total memory of the local GPUs, or None and why not."""

    total_bytes: int | None
    detail: str


def default_reserve_bytes(gpu_memory_bytes: int) -> int:
    return max(MIN_RESERVE_BYTES, int(gpu_memory_bytes * RESERVE_FRACTION))


def is_local_host(host: str) -> bool:
    """Whether `host:port` names this machine (so NVML sees LM Studio's GPUs)."""
    name = _host_name(host.strip().lower())
    if name in _LOCAL_NAMES or name.startswith("127."):
        return True
    return name in {socket.gethostname().lower(), socket.getfqdn().lower()}


def _host_name(host: str) -> str:
    if host.startswith("["):  # [ipv6]:port
        return host[1:].split("]", 1)[0]
    return host.split(":", 1)[0] if host.count(":") == 1 else host


def nvml_memory() -> NvmlReading:
    """Total memory of all local NVIDIA GPUs through NVML, or why it is unknown."""
    try:
        import pynvml
    except ImportError:
        return NvmlReading(None, "nvidia-ml-py is not installed (pip install "
                           "'lmstudio-queue[nvml]' on LM Studio's host)")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return NvmlReading(None, f"NVML did not start ({exc}; no NVIDIA driver on this host?)")
    try:
        return _read_gpus(pynvml)
    except pynvml.NVMLError as exc:
        return NvmlReading(None, f"NVML could not read the GPUs' memory ({exc})")
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _read_gpus(nvml: Any) -> NvmlReading:
    """Sum the memory of every GPU NVML lists (`nvml` is the initialised pynvml module)."""
    count = int(nvml.nvmlDeviceGetCount())
    if count == 0:
        return NvmlReading(None, "NVML sees no GPU on this host")
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    totals = [int(nvml.nvmlDeviceGetMemoryInfo(h).total) for h in handles]
    names = ", ".join(f"{_device_name(nvml, h)}: {t:,} bytes"
                      for h, t in zip(handles, totals, strict=True))
    return NvmlReading(sum(totals), f"NVML, {count} GPU{'s' * (count > 1)} ({names})")


def _device_name(nvml: Any, handle: Any) -> str:
    try:
        name = nvml.nvmlDeviceGetName(handle)
    except nvml.NVMLError:  # a name is only for the log
        return "GPU"
    return name.decode() if isinstance(name, bytes) else str(name)


def nvml_memory_bytes() -> int | None:
    """Total memory of all local NVIDIA GPUs, or None without NVML or GPUs."""
    return nvml_memory().total_bytes


def gpu_budget(settings: Settings) -> Budget:
    """The group's budget from settings, else NVML; BudgetUnknownError without either."""
    if settings.gpu_memory is not None:
        total, source, detail = int(settings.gpu_memory), "setting", "LMQ_GPU_MEMORY"
    else:
        total, detail = _nvml_total(settings.lmstudio_host)
        source = "nvml"
    reserve = (
        int(settings.gpu_reserve)
        if settings.gpu_reserve is not None
        else default_reserve_bytes(total)
    )
    return Budget(total, reserve, source, detail)


def _nvml_total(host: str) -> tuple[int, str]:
    if is_local_host(host):
        reading = nvml_memory()
    else:
        reading = NvmlReading(None, f"LM Studio at {host} is not on this host, so NVML "
                              "cannot see its GPU")
    if reading.total_bytes is None:
        raise BudgetUnknownError(
            f"GPU memory of LM Studio at {host} unknown: LMQ_GPU_MEMORY is not set and "
            f"{reading.detail}. Set LMQ_GPU_MEMORY to its GPU memory (e.g. 24GiB), or "
            "LMQ_ADMISSION=false to run without admission"
        )
    return reading.total_bytes, reading.detail
