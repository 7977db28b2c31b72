"""Start what the demo needs and is missing: Redis, an LM Studio stand-in, workers.

Everything started here is stopped when the stack's ExitStack closes; services that already
answer (Redis at LMQ_BROKER_URL, LM Studio at LMQ_LMSTUDIO_HOST) are used, never stopped.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from celery import Celery

from producers.celery_app import producer_app
from producers.lmstudio_host import lmstudio_answers
from producers.redis_server import RedisServer, free_port, redis_answers
from producers.settings_view import mask_url
from producers.worker_process import PROJECT_ROOT, WorkerProcess
from workers.settings import Settings

Say = Callable[[str], None]
SIMULATOR_START_S = 30.0
REAL_SIMULATOR_START_S = 120.0  # loads two real models first
ENGINE_NOTES = {"real": "real SmolLM2-135M + multilingual-e5-small on the CPU",
                "deterministic": "synthetic text and vectors; `ops/setup.d/local-models` "
                                 "installs real small models"}
WORKER_START_S = 90.0


class StartError(RuntimeError):
    """A service the demo started did not come up (the message says which and why)."""


def ensure_redis(settings: Settings, stack: ExitStack, say: Say) -> Settings:
    if redis_answers(settings.broker_url):
        say(f"Redis: using {mask_url(settings.broker_url)}")
        return settings
    say(f"Redis: nothing answers at {mask_url(settings.broker_url)}; starting a private "
        "redis-server")
    server = RedisServer().start()
    stack.callback(server.stop)
    say(f"Redis: started at {server.url}")
    return settings.model_copy(update={"broker_url": server.url, "result_backend": server.url,
                                       "redis_url": None})


def simulator_engine(wanted: str = "auto") -> str:
    """The simulator engine to start: `auto` = `real` when the local models are installed."""
    if wanted != "auto":
        return wanted
    from simulator.real_models import available

    return "real" if available() else "deterministic"


def ensure_lmstudio(settings: Settings, stack: ExitStack, say: Say,
                    engine: str = "deterministic") -> tuple[Settings, bool]:
    """(settings pointing at an LM Studio that answers, True if it is our simulator)."""
    if lmstudio_answers(settings.lmstudio_host):
        say(f"LM Studio: using {settings.lmstudio_host}")
        return settings, False
    say(f"LM Studio: nothing answers at {settings.lmstudio_host}; starting the simulator "
        f"(an LM Studio stand-in) with its {engine} engine: {ENGINE_NOTES.get(engine, '')}")
    host = start_simulator(stack, engine)
    say(f"LM Studio: simulator listening at {host}")
    return settings.model_copy(update={"lmstudio_host": host}), True


def start_simulator(stack: ExitStack, engine: str = "deterministic") -> str:
    port = free_port()
    host = f"127.0.0.1:{port}"
    log_path = Path(tempfile.mkstemp(prefix="lmq-simulator-", suffix=".log")[1])
    with log_path.open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "simulator", "--port", str(port),
                                    "--engine", engine],
                                   cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(_stop_process, process)
    deadline = time.monotonic() + (REAL_SIMULATOR_START_S if engine == "real"
                                   else SIMULATOR_START_S)
    while not lmstudio_answers(host, timeout_s=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise StartError(f"the simulator did not start on {host}:\n{tail}")
        time.sleep(0.05)
    return host


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worker_env(settings: Settings, on_simulator: bool) -> dict[str, str]:
    env = {"LMQ_BROKER_URL": settings.broker_url, "LMQ_RESULT_BACKEND": settings.backend_url,
           "LMQ_LMSTUDIO_HOST": settings.lmstudio_host, "PYTHONUNBUFFERED": "1"}
    if settings.redis_url:
        env["LMQ_REDIS_URL"] = settings.redis_url
    return env  # no LMQ_GPU_MEMORY: workers find the host's memory or admit by slots


def start_workers(settings: Settings, models: list[str], env: dict[str, str],
                  stack: ExitStack, say: Say, name_prefix: str = "demo") -> list[WorkerProcess]:
    workers = [WorkerProcess(model, env, name=f"{name_prefix}-{index}").start()
               for index, model in enumerate(models)]
    for worker in workers:
        stack.callback(worker.stop)
        say(f"worker: starting `celery -A workers worker` for {worker.model}")
    app = producer_app(settings)
    try:
        for worker in workers:
            _wait_ready(app, worker)
            say(f"worker: {worker.hostname} is ready (queue lmq.{worker.model})")
    finally:
        app.close()
    return workers


def _wait_ready(app: Celery, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + WORKER_START_S
    while True:
        if not worker.is_running():
            raise StartError(f"the worker for {worker.model} exited; its log:\n"
                             f"{worker.log_tail(30)}")
        replies = app.control.ping(destination=[worker.hostname], timeout=0.5)
        if any(worker.hostname in reply for reply in replies):
            return
        if time.monotonic() > deadline:
            raise StartError(f"the worker for {worker.model} did not answer within "
                             f"{WORKER_START_S:.0f}s; its log:\n{worker.log_tail(30)}")
