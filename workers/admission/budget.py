"""The host memory admission may hand out: LM Studio's host memory minus a reserve.

The host's memory is `LMQ_GPU_MEMORY` when set; otherwise what this machine reports
(`workers.admission.host_memory`: NVML, Apple unified memory, AMD SMI, in that order), but
only when LM Studio runs on this host (a loopback or own address in `LMQ_LMSTUDIO_HOST`):
those see the local GPUs, not LM Studio's. Without any answer the budget is *unknown*: the
worker starts anyway and admits by its instance's KV cells and slots, and says so once
(`UNKNOWN_ADVICE`, also in `lmq doctor` and `lmq gpu`).
The reserve is `LMQ_GPU_RESERVE` when set, else max(1 GiB, 10% of the memory): room for LM
Studio's compute buffers, the desktop, and models loaded by no worker of ours.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from workers.admission.host_memory import HostReading, Source, local_memory
from workers.settings import Settings

GIB = 1024**3
MIN_RESERVE_BYTES = GIB
RESERVE_FRACTION = 0.10
UNKNOWN_ADVICE = "host memory unknown: set LMQ_GPU_MEMORY to guard model loads"
_LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


@dataclass(frozen=True)
class Budget:
    """The host's memory (None: unknown) and the reserve kept free of it."""

    gpu_memory_bytes: int | None
    reserve_bytes: int
    source: str  # "setting", "host" (a host_memory source) or "unknown"
    detail: str = ""  # for the log: "LMQ_GPU_MEMORY", "NVML, 1 GPU (...)" or why unknown

    @property
    def known(self) -> bool:
        return self.gpu_memory_bytes is not None

    @property
    def usable_bytes(self) -> int | None:
        if self.gpu_memory_bytes is None:
            return None
        return max(0, self.gpu_memory_bytes - self.reserve_bytes)

    def warning(self) -> str:
        """The one line a worker logs when the memory is unknown."""
        return (f"{UNKNOWN_ADVICE} ({self.detail}); admitting by the loaded instance's KV "
                "cells and slots only")


def default_reserve_bytes(gpu_memory_bytes: int) -> int:
    return max(MIN_RESERVE_BYTES, int(gpu_memory_bytes * RESERVE_FRACTION))


def is_local_host(host: str) -> bool:
    """Whether `host:port` names this machine (so its GPUs are LM Studio's)."""
    name = _host_name(host.strip().lower())
    if name in _LOCAL_NAMES or name.startswith("127."):
        return True
    return name in {socket.gethostname().lower(), socket.getfqdn().lower()}


def _host_name(host: str) -> str:
    if host.startswith("["):  # [ipv6]:port
        return host[1:].split("]", 1)[0]
    return host.split(":", 1)[0] if host.count(":") == 1 else host


def host_reading(host: str, sources: tuple[Source, ...] | None = None) -> HostReading:
    """This machine's reading when LM Studio at `host` runs here; else why not."""
    if not is_local_host(host):
        return HostReading(None, f"LM Studio at {host} is not on this host, so its GPU "
                           "cannot be asked")
    return local_memory() if sources is None else local_memory(sources)


def gpu_budget(settings: Settings, sources: tuple[Source, ...] | None = None) -> Budget:
    """The group's budget from the setting, else this machine, else unknown."""
    total: int | None
    if settings.gpu_memory is not None:
        total, source, detail = int(settings.gpu_memory), "setting", "LMQ_GPU_MEMORY"
    else:
        reading = host_reading(settings.lmstudio_host, sources)
        total, detail = reading.total_bytes, reading.detail
        source = "host" if total is not None else "unknown"
    if settings.gpu_reserve is not None:
        reserve = int(settings.gpu_reserve)
    else:
        reserve = default_reserve_bytes(total) if total is not None else 0
    return Budget(total, reserve, source, detail)
