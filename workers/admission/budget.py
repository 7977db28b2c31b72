"""The GPU memory admission may hand out: the GPU's memory minus a reserve.

The GPU's memory is `LMQ_GPU_MEMORY` when set; otherwise NVML's total over all GPUs
(`nvidia-ml-py`, the `nvml` extra), but only when LM Studio runs on this host (a loopback
or own address in `LMQ_LMSTUDIO_HOST`): NVML sees the local GPUs, not LM Studio's.
The reserve is `LMQ_GPU_RESERVE` when set, else max(1 GiB, 10% of the GPU memory): room
for LM Studio's compute buffers, the desktop, and models loaded by no worker of ours.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

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

    @property
    def usable_bytes(self) -> int:
        return max(0, self.gpu_memory_bytes - self.reserve_bytes)


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


def nvml_memory_bytes() -> int | None:
    """Total memory of all local NVIDIA GPUs, or None without NVML or GPUs."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        total = sum(int(pynvml.nvmlDeviceGetMemoryInfo(h).total) for h in handles)
        return total or None
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def gpu_budget(settings: Settings) -> Budget:
    """The group's budget from settings, else NVML; BudgetUnknownError without either."""
    if settings.gpu_memory is not None:
        total, source = int(settings.gpu_memory), "setting"
    else:
        nvml = nvml_memory_bytes() if is_local_host(settings.lmstudio_host) else None
        if nvml is None:
            raise BudgetUnknownError(
                f"GPU memory of {settings.lmstudio_host} unknown: set LMQ_GPU_MEMORY "
                "(e.g. 24GiB), install the nvml extra on LM Studio's host, or set "
                "LMQ_ADMISSION=false"
            )
        total, source = nvml, "nvml"
    reserve = (
        int(settings.gpu_reserve)
        if settings.gpu_reserve is not None
        else default_reserve_bytes(total)
    )
    return Budget(total, reserve, source)
