"""Host memory sources with injected readings: Apple Silicon (sysctl) and AMD SMI.

NVML runs for real against a stand-in driver library in
tests/integration/test_admission_nvml.py; here the Apple source reads a probe and the AMD
source a module shaped like `amdsmi`, each answering as that machine would.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from workers.admission.host_memory import (
    METAL_WORKING_SET_SHARE,
    MIB,
    AppleProbe,
    HostReading,
    amd_memory,
    apple_memory,
    local_memory,
)

GIB = 1024**3


def mac(memsize: int | None, wired_limit_mb: int | None = 0, machine: str = "arm64") -> AppleProbe:
    values = {"hw.memsize": memsize, "iogpu.wired_limit_mb": wired_limit_mb}

    def sysctl(name: str) -> str | None:
        value = values.get(name)
        return None if value is None else str(value)

    return AppleProbe("Darwin", machine, sysctl)


def test_apple_default_is_the_metal_working_set_share() -> None:
    reading = apple_memory(mac(32 * GIB))
    assert reading.total_bytes == int(32 * GIB * METAL_WORKING_SET_SHARE)
    assert "Metal working set of 34,359,738,368 bytes" in reading.detail


def test_apple_wired_limit_wins_when_set() -> None:
    reading = apple_memory(mac(64 * GIB, wired_limit_mb=57344))
    assert reading.total_bytes == 57344 * MIB
    assert "iogpu.wired_limit_mb 57,344 MiB" in reading.detail


def test_apple_without_the_wired_limit_key_uses_the_share() -> None:  # older macOS
    assert apple_memory(mac(16 * GIB, wired_limit_mb=None)).total_bytes == int(
        16 * GIB * METAL_WORKING_SET_SHARE)


def test_not_apple_silicon() -> None:
    assert apple_memory(mac(16 * GIB, machine="x86_64")).total_bytes is None
    linux = AppleProbe("Linux", "arm64", lambda name: "1")
    assert apple_memory(linux) == HostReading(None, "not an Apple Silicon Mac")


class AmdSmiException(Exception):
    pass


def fake_amdsmi(totals: list[int], init_error: str | None = None) -> Any:
    """A module with amdsmi's calls, answering as a host with these GPUs."""
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if init_error:
            raise AmdSmiException(init_error)

    def memory_total(handle: int, kind: str) -> int:
        assert kind == "VRAM"
        return totals[handle]

    return SimpleNamespace(
        AmdSmiException=AmdSmiException, AmdSmiMemoryType=SimpleNamespace(VRAM="VRAM"),
        amdsmi_init=init, amdsmi_shut_down=lambda: calls.append("shut down"),
        amdsmi_get_processor_handles=lambda: list(range(len(totals))),
        amdsmi_get_gpu_memory_total=memory_total, calls=calls)


def test_amd_sums_every_gpu_and_shuts_down() -> None:
    module = fake_amdsmi([24 * GIB, 16 * GIB])
    reading = amd_memory(module)
    assert reading.total_bytes == 40 * GIB
    assert reading.detail.startswith("AMD SMI, 2 GPUs (25,769,803,776, ")
    assert module.calls == ["init", "shut down"]


def test_amd_without_an_answer_says_why() -> None:
    assert amd_memory(fake_amdsmi([], "AMDSMI_STATUS_DRIVER_NOT_LOADED")).detail == (
        "AMD SMI did not start (AMDSMI_STATUS_DRIVER_NOT_LOADED)")
    assert amd_memory(fake_amdsmi([])).detail == "AMD SMI sees no GPU on this host"


def test_sources_in_order_first_answer_wins() -> None:
    asked: list[str] = []

    def source(name: str, total: int | None) -> Any:
        return lambda: asked.append(name) or HostReading(total, name)

    reading = local_memory((source("nvml", None), source("apple", 8 * GIB),
                            source("amd", 16 * GIB)))
    assert (reading.total_bytes, asked) == (8 * GIB, ["nvml", "apple"])
    none = local_memory((source("a", None), source("b", None)))
    assert none == HostReading(None, "a; b")
