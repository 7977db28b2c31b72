"""The host memory budget with nothing set, through real worker processes, on a machine
without a GPU.

The worker runs the real nvidia-ml-py (`pynvml`, ctypes) and our budget code; what NVML
loads is either nothing (this machine has no NVIDIA driver: "NVML Shared Library Not
Found") or `fake_nvml.c`, a stand-in for libnvidia-ml.so.1 built here and found through
LD_LIBRARY_PATH, which reports GPUs and errors as the test tells it. AMD SMI is
`fake_amdsmi/amdsmi.py` on PYTHONPATH, the same way. With no answer the worker serves
anyway and says so once. What this cannot test is a real driver's answer on a real GPU.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from producers.worker_process import WorkerProcess
from tests.integration.test_worker_support import LLM, client_app, send
from tests.support.services import missing_service
from workers.admission.budget import default_reserve_bytes
from workers.admission.status import group_status
from workers.contract import CompletionJob

pytestmark = [pytest.mark.timeout(120)]
GIB = 1 << 30
SHIM_SOURCE = Path(__file__).with_name("fake_nvml.c")
FAKE_AMDSMI_DIR = Path(__file__).with_name("fake_amdsmi")


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


def warning_line(worker: WorkerProcess) -> str:
    """The one WARNING line of a worker that found no host memory (it started anyway)."""
    lines = [line for line in worker.log_tail(300).splitlines()
             if "WARNING/MainProcess" in line and "host memory unknown" in line]
    assert len(lines) == 1, worker.log_tail(300)
    assert "Traceback" not in worker.log_tail(300)
    return lines[0]


def serves_a_completion(redis_url: str, text: str) -> None:
    done = send(client_app(redis_url), CompletionJob(model=LLM, prompt=text,
                                                     config={"max_tokens": 3}))
    assert done.get(timeout=30)["stats"]["predicted_tokens_count"] == 3


def lmq(redis_url: str, *args: str) -> str:
    env = {**os.environ, "LMQ_REDIS_URL": redis_url, "LMQ_BROKER_URL": redis_url}
    command = [str(Path(sys.executable).with_name("lmq")), *args]  # the installed entry point
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


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
def test_nvml_without_an_answer_starts_and_warns_why(
        shim_env: dict[str, str], reason: str, fake_nvml: Path, simulator: Any,
        redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory(LLM, nvml_env(redis_url, simulator, LD_LIBRARY_PATH=str(fake_nvml),
                                          **shim_env))
    line = warning_line(worker)
    assert "host memory unknown: set LMQ_GPU_MEMORY to guard model loads" in line
    assert reason in line and "not an Apple Silicon Mac" in line
    serves_a_completion(redis_url, "no GPU reading")


def test_nothing_set_serves_and_says_host_memory_is_unknown(
        simulator: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    """The real thing on this machine: no NVIDIA driver, not a Mac, no amdsmi. The worker
    gets only what it cannot guess (Redis, where LM Studio is) and its model."""
    need_pynvml()
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this host has an NVIDIA driver")
    worker = worker_factory(LLM, nvml_env(redis_url, simulator))
    assert "NVML did not start (NVML Shared Library Not Found" in warning_line(worker)
    serves_a_completion(redis_url, "zero config")
    status = group_status(redis.Redis.from_url(redis_url), simulator.host)
    assert (status.host_memory_known, status.free_bytes) == (False, -1)
    assert "budget        host memory unknown: set LMQ_GPU_MEMORY to guard model loads" in (
        lmq(redis_url, "gpu", "--group", simulator.host))
    assert f"{simulator.host:30}    unknown" in lmq(redis_url, "workers")


def test_amd_smi_answers_when_nvml_does_not(
        fake_nvml: Path, simulator: Any, redis_url: str,
        worker_factory: Callable[..., WorkerProcess]) -> None:
    """NVML without a driver, not a Mac, then `amdsmi` (a stand-in module on PYTHONPATH)."""
    totals = [16 * GIB, 8 * GIB]
    worker = worker_factory(LLM, nvml_env(
        redis_url, simulator, LD_LIBRARY_PATH=str(fake_nvml), FAKE_NVML_INIT_ERROR="9",
        PYTHONPATH=str(FAKE_AMDSMI_DIR), FAKE_AMDSMI_TOTALS=",".join(map(str, totals))))
    assert "AMD SMI, 2 GPUs (17,179,869,184, 8,589,934,592 bytes)" in worker.log_tail(200)
    status = group_status(redis.Redis.from_url(redis_url), simulator.host)
    assert status.budget_bytes == sum(totals) - default_reserve_bytes(sum(totals))


def test_the_setting_wins_over_a_broken_nvml(
        fake_nvml: Path, simulator: Any, redis_url: str,
        worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory(LLM, nvml_env(redis_url, simulator, LD_LIBRARY_PATH=str(fake_nvml),
                                          FAKE_NVML_INIT_ERROR="9", LMQ_GPU_MEMORY="24GiB"))
    assert "(LMQ_GPU_MEMORY, reserve" in worker.log_tail(200)
    status = group_status(redis.Redis.from_url(redis_url), simulator.host)
    assert status.budget_bytes == 24 * GIB - default_reserve_bytes(24 * GIB)
