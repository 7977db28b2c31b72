"""A benchmark's own Celery worker process: started, ready once it answers a ping, stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from celery import Celery

ROOT = Path(__file__).resolve().parent.parent.parent


@contextmanager
def running(app_module: str, args: list[str], env: Mapping[str, str], client: Celery,
            name: str) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A <app_module> worker <args>` with `env`, its log in a temporary file."""
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the worker child writes to it
        prefix=f"lmq-{name}-", suffix=".log", delete=False)
    hostname = f"{name}-{os.getpid()}-{time.monotonic_ns() % 100000}@lmq"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app_module, "worker", *args,
         "--hostname", hostname],
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, cwd=ROOT, stdout=log,
        stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not client.control.ping([hostname], timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} worker did not start: {Path(log.name).read_text()}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
