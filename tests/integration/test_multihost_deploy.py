"""A GPU host's worker started the way the image starts it, without a Docker engine.

docker/entrypoint.sh and docker/healthcheck.sh run as they do in the container (their
shared library at the path the image puts it is rewritten to the repo's copy), with the
project's venv first on PATH, next to a simulated LM Studio and a private Redis:

- the health check passes once the worker answers a ping addressed to its node name
  (`<model>@$HOSTNAME`), and fails again after the worker stopped;
- a stop (SIGTERM, what `docker stop` / compose sends through tini) is a warm shutdown: the
  running prediction finishes with its result, then the worker exits 0 — the behaviour the
  compose grace period and the runbook are written for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers import JobQueue
from producers.redis_server import RedisServer
from tests.support.wait import wait_until
from workers.contract import ChatResult
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHAT = "llama-3.2-1b-instruct"
IMAGE_LIB = "/usr/local/lib/lmq/node-name.sh"

pytestmark = pytest.mark.timeout(180)


def image_script(name: str, directory: Path) -> Path:
    """A docker/ script, its library path pointed at the repo's copy."""
    text = (ROOT / "docker" / name).read_text()
    assert IMAGE_LIB in text
    script = directory / name
    script.write_text(text.replace(IMAGE_LIB, str(ROOT / "docker" / "node-name.sh")))
    script.chmod(0o755)
    return script


@pytest.fixture()
def container_env(redis_server: RedisServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    import redis

    from simulator.testing import running_simulator

    url = redis_server.url.rsplit("/", 1)[0] + "/11"
    redis.Redis.from_url(url).flushdb()  # our own private server: safe to flush
    with running_simulator(in_process=False) as sim:
        yield {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "HOSTNAME": f"ctr-{uuid.uuid4().hex[:8]}",
            "LMQ_BROKER_URL": url,
            "LMQ_RESULT_BACKEND": url,
            "LMQ_LMSTUDIO_HOST": sim.host,
            "LMQ_ADMISSION_GROUP": "gpu-1",
            "LMQ_GPU_MEMORY": "24GiB",
            "LMQ_MODEL": CHAT,
            "PYTHONUNBUFFERED": "1",
            "LMQ_SIM_HOST": sim.host,  # for the test only (ignored by settings)
        }


def healthy(script: Path, env: dict[str, str], cwd: Path) -> bool:
    done = subprocess.run(
        [str(script), "worker"], env=env, cwd=cwd, capture_output=True, timeout=60
    )
    return done.returncode == 0


def test_entrypoint_worker_is_healthy_and_finishes_its_job_on_stop(
    container_env: dict[str, str], tmp_path: Path
) -> None:
    from simulator.admin import SimulatorAdmin

    entrypoint = image_script("entrypoint.sh", tmp_path)
    health = image_script("healthcheck.sh", tmp_path)
    workdir = tmp_path / "home"  # not the repo: `workers` comes from the installed package
    workdir.mkdir()

    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(entrypoint)], env=container_env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_until(
            lambda: worker.poll() is not None or healthy(health, container_env, workdir),
            timeout=90,
            interval=0.5,
            message="the container health check to pass",
        )
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        # exec: the entrypoint's process *is* the Celery worker, so it gets the signal.
        cmdline = Path(f"/proc/{worker.pid}/cmdline").read_bytes().split(b"\0")
        assert b"worker" in cmdline and any(b"celery" in part for part in cmdline)

        admin = SimulatorAdmin(container_env["LMQ_SIM_HOST"])
        admin.set_timing(decode_tokens_per_s=25.0)
        admin.set_faults(reply_tokens=60)  # ~2.5 s of generation
        settings = Settings(
            broker_url=container_env["LMQ_BROKER_URL"],
            result_backend=container_env["LMQ_RESULT_BACKEND"],
        )
        with JobQueue(settings) as queue:
            handle = queue.chat(CHAT, "A short story", config={"max_tokens": 60})
            wait_until(
                lambda: (p := handle.progress()) is not None and p.tokens_so_far > 0,
                timeout=60,
                message="the job generating",
            )
            worker.send_signal(signal.SIGTERM)  # docker stop
            result = handle.result(timeout=60)
        assert isinstance(result, ChatResult) and handle.status() == "SUCCESS"
        assert result.stats.predicted_tokens_count == 60  # finished, not cut short
        assert result.worker == f"{CHAT}@{container_env['HOSTNAME']}"
        assert worker.wait(timeout=60) == 0
        assert not healthy(health, container_env, workdir)
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
