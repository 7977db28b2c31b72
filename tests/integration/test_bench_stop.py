"""A benchmark stopped with SIGTERM stops what it started (`ops.benchlib.entry`): here
`ops/bench_simulator.py`'s simulator and SDK drivers, real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from producers.worker_process import PROJECT_ROOT
from tests.support.wait import wait_until


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except FileNotFoundError:  # the thread ended since the listing (seen in a CI run)
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_benchmark_stopped_with_sigterm_stops_its_simulator() -> None:
    bench = subprocess.Popen([sys.executable, "ops/bench_simulator.py", "--seconds", "60"],
                             cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    started: set[int] = set()
    try:
        # its simulator, and once that answers, its two SDK driver processes
        wait_until(lambda: len(_children(bench.pid)) >= 3, timeout=60,
                   message="the benchmark's simulator and drivers started")
        started = _children(bench.pid)
        os.kill(bench.pid, signal.SIGTERM)
        _, err = bench.communicate(timeout=30)  # EOF once no child holds its stderr
    finally:
        bench.kill()
        for pid in started:  # what a failing run left
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert bench.returncode == 128 + signal.SIGTERM
    # (a driver stopped while it starts may print its own traceback: not the benchmark's)
    assert "benchmark stopped" in err and "Terminated" not in err, err
    # (multiprocessing's resource tracker exits by itself once its parent has: a moment)
    wait_until(lambda: not [pid for pid in started if _alive(pid)], timeout=10,
               message="no process of the benchmark left")
