"""Peak memory of benchmark processes, from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path

import psutil


def peak_kib(pid: int) -> int:
    """VmHWM (peak resident set) of one process, in KiB; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_peak_kib(pid: int) -> int:
    """Sum of the peaks of a process and its live children (a prefork pool's footprint)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        children = []
    return peak_kib(pid) + sum(peak_kib(child.pid) for child in children)
