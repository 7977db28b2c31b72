"""How much memory LM Studio's host has for models, asked of the machine, no setting needed.

Sources, tried in this order by `local_memory` (the first that answers wins):

1. NVML (`nvidia-ml-py`): the total memory of every NVIDIA GPU;
2. Apple Silicon: unified memory is shared with the CPU, and Metal lets the GPU wire only
   part of it: `iogpu.wired_limit_mb` when an operator set it (0 means macOS's default),
   else the total (`hw.memsize`) times `METAL_WORKING_SET_SHARE`;
3. AMD SMI (`amdsmi`, ROCm's Python binding), when importable: the VRAM of every AMD GPU.

Each source reports a `HostReading`: the bytes, or None and why not (for the one WARNING
line a worker logs when nothing answers). Each takes what it reads through a small seam
(the NVML / AMD SMI module, an `AppleProbe`), so tests inject readings of machines they are
not running on. These see this machine only: `workers.admission.budget` asks them only when
LM Studio runs here.
"""

from __future__ import annotations

import contextlib
import importlib
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

MIB = 1024**2
# Metal's recommendedMaxWorkingSetSize as a share of unified memory with no wired limit set:
# reported as 11.84 GB of 16 GB (M3) and 17.76 GiB of 24 GB (0.74), and 107.52 of 128 GiB
# (0.84) on larger Macs. One share, the smaller: an undercount on a big Mac costs admission
# a little room, an overcount lets a load past what Metal will wire.
METAL_WORKING_SET_SHARE = 0.74
SYSCTL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class HostReading:
    """One source's answer: total bytes, or None and why not."""

    total_bytes: int | None
    detail: str  # "NVML, 1 GPU (name: bytes)" or why the source gave no answer


# --- NVIDIA --------------------------------------------------------------------------------

def nvml_memory(nvml: Any = None) -> HostReading:
    """Total memory of all local NVIDIA GPUs through NVML (`nvml`: pynvml, by default)."""
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return HostReading(None, "nvidia-ml-py is not installed")
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return HostReading(None, f"NVML did not start ({exc}; no NVIDIA driver on this host?)")
    try:
        return _read_nvidia_gpus(nvml)
    except nvml.NVMLError as exc:
        return HostReading(None, f"NVML could not read the GPUs' memory ({exc})")
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _read_nvidia_gpus(nvml: Any) -> HostReading:
    count = int(nvml.nvmlDeviceGetCount())
    if count == 0:
        return HostReading(None, "NVML sees no GPU on this host")
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    totals = [int(nvml.nvmlDeviceGetMemoryInfo(h).total) for h in handles]
    names = ", ".join(f"{_nvidia_name(nvml, h)}: {t:,} bytes"
                      for h, t in zip(handles, totals, strict=True))
    return HostReading(sum(totals), f"NVML, {count} GPU{'s' * (count > 1)} ({names})")


def _nvidia_name(nvml: Any, handle: Any) -> str:
    try:
        name = nvml.nvmlDeviceGetName(handle)
    except nvml.NVMLError:  # a name is only for the log
        return "GPU"
    return name.decode() if isinstance(name, bytes) else str(name)


# --- Apple Silicon -------------------------------------------------------------------------

def _sysctl(name: str) -> str | None:
    """`sysctl -n name`, or None when the key or the command is missing."""
    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True,
                              timeout=SYSCTL_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@dataclass(frozen=True)
class AppleProbe:
    """What the Apple source reads: the OS, the CPU and sysctl keys (injectable)."""

    system: str
    machine: str
    sysctl: Callable[[str], str | None]

    @classmethod
    def this_machine(cls) -> AppleProbe:
        return cls(platform.system(), platform.machine(), _sysctl)


def apple_memory(probe: AppleProbe | None = None) -> HostReading:
    """The unified memory Metal lets the GPU use on Apple Silicon (module docstring)."""
    probe = probe or AppleProbe.this_machine()
    if probe.system != "Darwin" or probe.machine != "arm64":
        return HostReading(None, "not an Apple Silicon Mac")
    total = _int(probe.sysctl("hw.memsize"))
    if not total:
        return HostReading(None, "sysctl hw.memsize gave no answer")
    wired_mb = _int(probe.sysctl("iogpu.wired_limit_mb"))
    if wired_mb:  # an operator's limit; 0 or absent: macOS's default share
        return HostReading(wired_mb * MIB, f"Apple unified memory, iogpu.wired_limit_mb "
                           f"{wired_mb:,} MiB of {total:,} bytes")
    share = int(total * METAL_WORKING_SET_SHARE)
    return HostReading(share, f"Apple unified memory, {METAL_WORKING_SET_SHARE:.0%} Metal "
                       f"working set of {total:,} bytes")


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# --- AMD -----------------------------------------------------------------------------------

def amd_memory(amdsmi: ModuleType | Any = None) -> HostReading:
    """Total VRAM of all local AMD GPUs through AMD SMI (`amdsmi`: the module, by default)."""
    if amdsmi is None:
        try:
            amdsmi = importlib.import_module("amdsmi")
        except ImportError:
            return HostReading(None, "amdsmi is not installed")
    failure = getattr(amdsmi, "AmdSmiException", Exception)
    try:
        amdsmi.amdsmi_init()
    except failure as exc:
        return HostReading(None, f"AMD SMI did not start ({exc})")
    try:
        handles = list(amdsmi.amdsmi_get_processor_handles())
        vram = amdsmi.AmdSmiMemoryType.VRAM
        totals = [int(amdsmi.amdsmi_get_gpu_memory_total(h, vram)) for h in handles]
    except failure as exc:
        return HostReading(None, f"AMD SMI could not read the GPUs' memory ({exc})")
    finally:
        with contextlib.suppress(failure):
            amdsmi.amdsmi_shut_down()
    if not totals:
        return HostReading(None, "AMD SMI sees no GPU on this host")
    count = len(totals)
    sizes = ", ".join(f"{t:,}" for t in totals)
    return HostReading(sum(totals), f"AMD SMI, {count} GPU{'s' * (count > 1)} ({sizes} bytes)")


# --- in order ------------------------------------------------------------------------------

Source = Callable[[], HostReading]
SOURCES: tuple[Source, ...] = (nvml_memory, apple_memory, amd_memory)


def local_memory(sources: tuple[Source, ...] = SOURCES) -> HostReading:
    """The first source that answers; else None and every source's reason, joined."""
    reasons = []
    for source in sources:
        reading = source()
        if reading.total_bytes is not None:
            return reading
        reasons.append(reading.detail)
    return HostReading(None, "; ".join(reasons))
