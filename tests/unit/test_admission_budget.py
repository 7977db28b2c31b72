"""GPU memory budget: setting or NVML, minus max(1 GiB, 10%) or the configured reserve."""

from __future__ import annotations

import sys

import pytest

from workers.admission.budget import (
    GIB,
    BudgetUnknownError,
    default_reserve_bytes,
    gpu_budget,
    is_local_host,
    nvml_memory,
    nvml_memory_bytes,
)
from workers.error import LmqError
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
    with pytest.raises(BudgetUnknownError, match="LMQ_GPU_MEMORY") as info:
        gpu_budget(settings(lmstudio_host="gpu-box.invalid:1234"))
    exc = info.value
    assert "gpu-box.invalid:1234 is not on this host, so NVML cannot see its GPU" in str(exc)
    assert isinstance(exc, LmqError)
    assert str(type(exc)(*exc.args)) == str(exc)  # rebuilds from its args


def test_local_host_uses_nvml_or_says_why_not() -> None:
    reading = nvml_memory()
    if reading.total_bytes is None:  # no nvidia-ml-py, no driver, or no GPU: which one
        with pytest.raises(BudgetUnknownError, match="Set LMQ_GPU_MEMORY") as info:
            gpu_budget(settings(lmstudio_host="localhost:1234"))
        assert reading.detail in str(info.value)
    else:  # a machine with an NVIDIA GPU and the nvml extra
        budget = gpu_budget(settings(lmstudio_host="localhost:1234"))
        assert (budget.gpu_memory_bytes, budget.source) == (reading.total_bytes, "nvml")
        assert nvml_memory_bytes() == reading.total_bytes


def test_nvml_not_installed_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    reading = nvml_memory()
    assert reading.total_bytes is None
    assert "nvidia-ml-py is not installed" in reading.detail
    with pytest.raises(BudgetUnknownError, match="nvidia-ml-py is not installed"):
        gpu_budget(settings(lmstudio_host="127.0.0.1:1234"))


@pytest.mark.parametrize(("host", "local"), [
    ("localhost:1234", True), ("127.0.0.1:1234", True), ("[::1]:1234", True),
    ("127.0.1.1", True), ("gpu-box.invalid:1234", False), ("10.1.2.3:1234", False),
])
def test_is_local_host(host: str, local: bool) -> None:
    assert is_local_host(host) is local
