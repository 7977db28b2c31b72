"""The GPU budget from NVML, through real worker processes, on a machine without a GPU.

The worker runs the real nvidia-ml-py (`pynvml`, ctypes) and our budget code; what NVML
loads is either nothing (this machine has no NVIDIA driver: "NVML Shared Library Not
Found") or `fake_nvml.c`, a stand-in for libnvidia-ml.so.1 built here and found through
LD_LIBRARY_PATH, which reports GPUs and errors as the test tells it. What this cannot
test is the real driver's answer on a real GPU.
"""

from __future__ import annotations

import ctypes.util
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from producers.worker_process import WorkerProcess
from tests.integration.test_worker_support import LLM, client_app, send
from tests.support.services import missing_service
from tests.support.wait import wait_until
from workers.admission.budget import default_reserve_bytes
from workers.admission.status import group_status
from workers.contract import CompletionJob

pytestmark = [pytest.mark.timeout(120)]
GIB = 1 << 30
EXIT_CONFIG = 78
SHIM_SOURCE = Path(__file__).with_name("fake_nvml.c")


def need_pynvml() -> None:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        missing_service("nvidia-ml-py (in the dev and nvml extras)")


@pytest.fixture(scope="module")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the stand-in libnvidia-ml.so.1."""
    need_pynvml()
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        missing_service("a C compiler (cc) to build the stand-in NVML library")
    assert compiler is not None
    out = tmp_path_factory.mktemp("nvml")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(out / "libnvidia-ml.so.1"),
                    str(SHIM_SOURCE)], check=True)
    return out


def nvml_env(redis_url: str, sim: Any, **extra: str) -> dict[str, str]:
    """A worker on this host's LM Studio (the simulator) with no LMQ_GPU_MEMORY."""
    return {"LMQ_BROKER_URL": redis_url, "LMQ_RESULT_BACKEND": redis_url,
            "LMQ_LMSTUDIO_HOST": sim.host, "PYTHONUNBUFFERED": "1", **extra}


def exit_line(worker: WorkerProcess) -> str:
    """Wait for the worker to exit 78; its ERROR line."""
    assert worker.process is not None
    wait_until(lambda: not worker.is_running(), timeout=60,
               message=lambda: f"the worker to exit; log:\n{worker.log_tail()}")
    assert worker.process.returncode == EXIT_CONFIG, worker.log_tail()
    lines = [line for line in worker.log_tail(200).splitlines() if "ERROR/MainProcess" in line
             and "GPU memory" in line]
    assert len(lines) == 1, worker.log_tail()
    assert "Traceback" not in worker.log_tail(200)
    return lines[0]


def test_budget_from_nvml(fake_nvml: Path, simulator: Any, redis_url: str,
                          worker_factory: Callable[..., WorkerProcess]) -> None:
    totals = [8 * GIB, 4 * GIB]
    worker = worker_factory(LLM, nvml_env(
        redis_url, simulator, LD_LIBRARY_PATH=str(fake_nvml),
        FAKE_NVML_TOTALS=",".join(map(str, totals))))
    assert "NVML, 2 GPUs (Fake GPU 0: 8,589,934,592 bytes" in worker.log_tail(200)
    app = client_app(redis_url)
    done = send(app, CompletionJob(model=LLM, prompt="on NVML", config={"max_tokens": 3}))
    assert done.get(timeout=30)["stats"]["predicted_tokens_count"] == 3
    status = group_status(redis.Redis.from_url(redis_url), simulator.host)
    assert status.budget_bytes == sum(totals) - default_reserve_bytes(sum(totals))


@pytest.mark.parametrize(("shim_env", "reason"), [
    ({"FAKE_NVML_INIT_ERROR": "9"}, "NVML did not start (Driver Not Loaded"),
    ({"FAKE_NVML_TOTALS": ""}, "NVML sees no GPU on this host"),
])
def test_nvml_without_an_answer_exits_saying_why(
        shim_env: dict[str, str], reason: str, fake_nvml: Path, simulator: Any,
        redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory(LLM, nvml_env(redis_url, simulator, LD_LIBRARY_PATH=str(fake_nvml),
                                          **shim_env), wait_ready=False)
    line = exit_line(worker)
    assert reason in line and "Set LMQ_GPU_MEMORY" in line and "LMQ_ADMISSION=false" in line


def test_no_nvidia_driver_here_exits_saying_why(
        simulator: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    """The real thing on this machine: nvidia-ml-py finds no libnvidia-ml at all."""
    need_pynvml()
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this host has an NVIDIA driver")
    worker = worker_factory(LLM, nvml_env(redis_url, simulator), wait_ready=False)
    line = exit_line(worker)
    assert "NVML did not start (NVML Shared Library Not Found" in line
    assert "Set LMQ_GPU_MEMORY" in line


def test_the_setting_wins_over_a_broken_nvml(
        fake_nvml: Path, simulator: Any, redis_url: str,
        worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory(LLM, nvml_env(redis_url, simulator, LD_LIBRARY_PATH=str(fake_nvml),
                                          FAKE_NVML_INIT_ERROR="9", LMQ_GPU_MEMORY="24GiB"))
    assert "(LMQ_GPU_MEMORY, reserve" in worker.log_tail(200)
    status = group_status(redis.Redis.from_url(redis_url), simulator.host)
    assert status.budget_bytes == 24 * GIB - default_reserve_bytes(24 * GIB)
