"""Peak memory of benchmark processes, from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def peak_kib(pid: int) -> int:
    """VmHWM (peak resident set) of one process, in KiB; 0 if it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_peak_kib(pid: int) -> int:
    """Sum of the peaks of a process and its live children (a prefork pool's footprint)."""
    return peak_kib(pid) + sum(peak_kib(child) for child in descendants(pid))


def descendants(pid: int) -> list[int]:
    """Live children of `pid`, recursively, from each process's parent id in /proc/*/stat
    (read here rather than through psutil, which this project does not depend on)."""
    parents: dict[int, int] = {}
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found
