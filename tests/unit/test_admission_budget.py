"""Host memory budget: setting, else this machine, else unknown; minus the reserve."""

from __future__ import annotations

import sys

import pytest

from workers.admission.budget import GIB, default_reserve_bytes, gpu_budget, is_local_host
from workers.admission.host_memory import HostReading, nvml_memory
from workers.settings import Settings


def settings(**fields: object) -> Settings:
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


@pytest.mark.parametrize(("memory", "reserve"), [
    (8 * GIB, GIB),  # 10% is 0.8 GiB: the 1 GiB floor wins
    (10 * GIB, GIB),
    (24 * GIB, int(2.4 * GIB)),
    (80 * GIB, 8 * GIB),
])
def test_default_reserve(memory: int, reserve: int) -> None:
    assert default_reserve_bytes(memory) == reserve


def test_budget_from_setting() -> None:
    budget = gpu_budget(settings(gpu_memory="24GiB"))
    assert (budget.gpu_memory_bytes, budget.source) == (24 * GIB, "setting")
    assert budget.usable_bytes == 24 * GIB - int(2.4 * GIB)


def test_explicit_reserve() -> None:
    budget = gpu_budget(settings(gpu_memory="16GiB", gpu_reserve="512MiB"))
    assert budget.usable_bytes == 16 * GIB - 512 * 1024**2


def test_reserve_larger_than_memory_leaves_nothing() -> None:
    assert gpu_budget(settings(gpu_memory="1GiB", gpu_reserve="2GiB")).usable_bytes == 0


def test_remote_host_without_setting_is_unknown() -> None:
    budget = gpu_budget(settings(lmstudio_host="gpu-box.invalid:1234"))
    assert (budget.known, budget.usable_bytes, budget.source) == (False, None, "unknown")
    assert "gpu-box.invalid:1234 is not on this host" in budget.detail
    assert budget.warning().startswith(
        "host memory unknown: set LMQ_GPU_MEMORY to guard model loads (LM Studio at "
        "gpu-box.invalid:1234 is not on this host")


def test_local_host_takes_the_first_source_that_answers() -> None:
    silent = (lambda: HostReading(None, "no NVML"), lambda: HostReading(None, "no Mac"))
    unknown = gpu_budget(settings(lmstudio_host="localhost:1234"), silent)
    assert not unknown.known and unknown.detail == "no NVML; no Mac"
    answers = (*silent, lambda: HostReading(16 * GIB, "AMD SMI, 1 GPU"))
    budget = gpu_budget(settings(lmstudio_host="localhost:1234"), answers)
    assert (budget.gpu_memory_bytes, budget.source, budget.detail) == (
        16 * GIB, "host", "AMD SMI, 1 GPU")
    assert budget.usable_bytes == 16 * GIB - int(1.6 * GIB)


def test_the_setting_wins_over_the_machine() -> None:
    asked: list[str] = []
    source = (lambda: asked.append("nvml") or HostReading(8 * GIB, "NVML"),)
    budget = gpu_budget(settings(gpu_memory="24GiB", lmstudio_host="localhost:1"), source)
    assert (budget.gpu_memory_bytes, asked) == (24 * GIB, [])


def test_nvml_not_installed_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    reading = nvml_memory()
    assert reading.total_bytes is None
    assert "nvidia-ml-py is not installed" in reading.detail


@pytest.mark.parametrize(("host", "local"), [
    ("localhost:1234", True), ("127.0.0.1:1234", True), ("[::1]:1234", True),
    ("127.0.1.1", True), ("gpu-box.invalid:1234", False), ("10.1.2.3:1234", False),
])
def test_is_local_host(host: str, local: bool) -> None:
    assert is_local_host(host) is local
