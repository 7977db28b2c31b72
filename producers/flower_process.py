"""Start `celery -A workers flower` as a child process (tests, benchmarks).

It is the exact command a user types: settings travel in `LMQ_*` environment variables,
and nothing else is passed (the port comes from `LMQ_FLOWER_PORT`) unless `args` adds
Flower flags. Flower needs auth (`LMQ_FLOWER_BASIC_AUTH` in `env`, or
`LMQ_FLOWER_ALLOW_NO_AUTH=true`): without it the process exits at once and `start()`
raises with its one-line message.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from producers import child_process

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flower_command(*args: str) -> list[str]:
    """`celery -A workers flower [args]`, run with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", "workers", "flower", *args]


class FlowerProcess:
    """One Flower process; `url` answers once `start()` returned."""

    def __init__(self, env: Mapping[str, str], *, port: int | None = None,
                 cwd: Path | str | None = None, args: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.args = flower_command(*args)
        self.env = {**os.environ, **env, "LMQ_FLOWER_PORT": str(self.port)}
        self.cwd = Path(cwd) if cwd else PROJECT_ROOT
        self.log_path = Path(tempfile.mkstemp(prefix="lmq-flower-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> FlowerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.args, env=self.env, cwd=self.cwd,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not self._healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"flower exited ({self.process.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"flower not up after {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthcheck", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return child_process.log_tail(self.log_path, lines)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        return child_process.stop(self.process, timeout_s)
