"""A simulator whose starter stops before reading its ready line stops quietly: one line,
no traceback (seen when a benchmark was stopped during its start-up)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


def test_a_closed_ready_pipe_stops_the_simulator_without_a_traceback():
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PROJECT_ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the starter is gone before the simulator is ready
    stderr = proc.stderr.read().decode()
    assert proc.wait(60) == 0
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "simulator: stopped, the process that started it is gone")
