"""Start a simulator for a test: `with running_simulator({...}) as sim: Client(sim.host)`.

In-process (default) runs the server's event loop in a daemon thread; `in_process=False`
runs `python -m simulator` as a subprocess (the real CLI, as integration tests want).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from simulator.admin import SimulatorAdmin
from simulator.server import Simulator

_START_TIMEOUT_S = 30.0


class _ThreadRunner:
    """Owns an event loop thread hosting one Simulator."""

    def __init__(self, config: dict[str, Any] | str | None, host: str, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="lmq-simulator",
                                       daemon=True)
        self.thread.start()
        self.simulator: Simulator = self._call(self._create(config))
        self._call(self.simulator.start(host, port))
        self.port = self.simulator.port

    @staticmethod
    async def _create(config: dict[str, Any] | str | None) -> Simulator:
        return Simulator(config)  # built on the loop: asyncio primitives bind to it

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(_START_TIMEOUT_S)

    def stop(self) -> None:
        self._call(self.simulator.stop())

    def start(self) -> None:
        self._call(self.simulator.start(self.simulator.host, self.port))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self.simulator.close())
        with contextlib.suppress(Exception):
            self._call(_cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def _cancel_the_rest() -> None:
    """Cancel the tasks still on the loop (an idle TTL's unload timer, a connection's
    handler), so none is garbage-collected pending ("Task was destroyed but it is pending")
    once the loop stops."""
    current = asyncio.current_task()
    rest = [task for task in asyncio.all_tasks() if task is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


class _ProcessRunner:
    """Runs `python -m simulator` and reads its SIMULATOR_READY line."""

    def __init__(self, config: dict[str, Any] | str | None, host: str, port: int) -> None:
        self.host = host
        self._config_path = _config_file(config)
        self.proc: subprocess.Popen[str] | None = None
        self.port = port
        self.simulator = None
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "simulator", "--host", self.host, "--port", str(self.port)]
        if self._config_path:
            cmd += ["--config", self._config_path]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line = _read_ready_line(self.proc)
        self.port = int(line.split()[1].rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()


def _read_ready_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(_START_TIMEOUT_S)
    if not result or not result[0].startswith("SIMULATOR_READY"):
        proc.kill()
        raise RuntimeError(f"simulator did not start: {result!r}")
    return result[0]


def _config_file(config: dict[str, Any] | str | None) -> str | None:
    if config is None or isinstance(config, str):
        return config
    fd, path = tempfile.mkstemp(suffix=".json", prefix="lmq-sim-")
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle)
    return path


class RunningSimulator:
    """What `running_simulator` yields."""

    def __init__(self, runner: _ThreadRunner | _ProcessRunner, bind_host: str) -> None:
        self._runner = runner
        self.port: int = runner.port
        self.host = f"{bind_host}:{self.port}"  # what LMQ_LMSTUDIO_HOST / lms.Client take
        self.admin = SimulatorAdmin(self.host)
        self.simulator: Simulator | None = runner.simulator  # None for subprocesses

    @property
    def pid(self) -> int:
        """The process serving: the subprocess's pid, or this process's when in-process
        (e.g. for benchmarks reading the simulator's CPU time)."""
        proc = getattr(self._runner, "proc", None)
        return proc.pid if proc is not None else os.getpid()

    def stop(self) -> None:
        """Stop listening and drop every socket."""
        self._runner.stop()

    def start(self) -> None:
        self._runner.start()
        self.admin.wait_ready()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port."""
        with contextlib.suppress(Exception):
            self._runner.stop()
        self.start()


@contextlib.contextmanager
def running_simulator(config: dict[str, Any] | str | None = None, *, host: str = "127.0.0.1",
                      port: int = 0, in_process: bool = True) -> Iterator[RunningSimulator]:
    """A simulator for a test on this host. Unlike the CLI, a dict (or no) config gets
    `server.model_paths = "absolute"` unless it says otherwise: the pool's workers in tests
    read the simulator's GGUF files by ModelInfo.path and know no models folder."""
    if config is None or isinstance(config, dict):
        server = {"model_paths": "absolute", **(config or {}).get("server", {})}
        config = {**(config or {}), "server": server}
    runner: _ThreadRunner | _ProcessRunner = (
        _ThreadRunner(config, host, port) if in_process else _ProcessRunner(config, host, port))
    try:
        running = RunningSimulator(runner, host)
        running.admin.wait_ready()
        yield running
    finally:
        runner.close()
