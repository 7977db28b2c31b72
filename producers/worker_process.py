"""Start `celery -A workers worker` as a child process (demo, tests, benchmarks).

It is the exact command a user types; settings travel in `LMQ_*` environment variables.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from producers import child_process

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """One worker pinned to one model; its log goes to `log_path`."""

    def __init__(self, model: str, env: Mapping[str, str], *, name: str | None = None,
                 extra_args: list[str] | None = None, app: str = "workers") -> None:
        self.model = model
        self.app = app  # `celery -A <app>`: tests may wrap the workers app
        self.name = name or f"{model}-{os.getpid()}-{time.monotonic_ns() % 100000}"
        self.env = {**os.environ, **env, "LMQ_MODEL": model}
        self.extra_args = extra_args or []
        self.log_path = Path(tempfile.mkstemp(prefix="lmq-worker-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}@lmq"

    def start(self) -> WorkerProcess:
        args = [sys.executable, "-m", "celery", "-A", self.app, "worker",
                "--hostname", self.hostname, "--loglevel", "INFO", *self.extra_args]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, env=self.env, cwd=PROJECT_ROOT,
                                        stdout=log, stderr=subprocess.STDOUT)
        return self

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return child_process.log_tail(self.log_path, lines)

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-job without acknowledging anything."""
        if self.is_running():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not exit in time."""
        return child_process.stop(self.process, timeout_s)
