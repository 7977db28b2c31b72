"""Helpers for the child processes this project starts (a worker, Flower): the tail of a
child's log, and a warm stop that escalates to SIGKILL.

Here, not in `producers`, because `workers` must not import `producers` and both start
children (`producers.worker_process`, `producers.flower_process`).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


def log_tail(path: Path, lines: int = 60) -> str:
    """The last `lines` lines of a child's log ("" before it wrote one)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def stop(process: subprocess.Popen[bytes] | None, timeout_s: float) -> int | None:
    """SIGTERM (Celery's and Flower's warm shutdown), then SIGKILL if it does not exit in
    `timeout_s`; the exit status, or None if it never started."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
