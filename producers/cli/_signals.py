"""SIGTERM stops a command the way Ctrl-C does.

systemd, `docker stop`, `timeout` and `kill` send SIGTERM, and Python's default for it is to
die on the spot: no `finally` runs. `lmq embed-corpus` would then leave its jobs in flight
unrevoked and print no `--resume` hint; `lmq demo` would leave its Redis, worker and
simulator running. Raised as `Terminated`, a KeyboardInterrupt, SIGTERM takes the paths
Ctrl-C already takes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM."""

    exit_code = 128 + signal.SIGTERM  # what a shell reports for a process SIGTERM ended


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM raises Terminated in the main thread (once: a second
    SIGTERM during the cleanup is ignored, as the cleanup is what it would cut short).
    A SIGTERM someone chose to ignore, or a handler already set, is left alone."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()
