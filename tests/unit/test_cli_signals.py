"""SIGTERM ends an `lmq` command as Ctrl-C does (producers.cli._signals)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from producers.cli._signals import Terminated, sigterm_interrupts

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_raises_terminated_in_the_block_and_the_default_comes_back() -> None:
    with pytest.raises(Terminated) as raised, sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()  # never reached past the handler
    assert isinstance(raised.value, KeyboardInterrupt)  # Ctrl-C's cleanup paths apply
    assert raised.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_an_ignored_sigterm_stays_ignored() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with sigterm_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)  # ignored: nothing is raised
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_terminated_command_runs_its_cleanup_and_exits_143(tmp_path: Path) -> None:
    """A command the way `lmq` runs one, in a child process: SIGTERM unwinds it through its
    `finally` (where `lmq demo` stops its children) and ends it with one line, no traceback."""
    marker = tmp_path / "cleaned"
    script = textwrap.dedent(f"""
        import signal, sys, click
        from producers.cli import main

        @main.command("wait-forever")
        def wait_forever():
            try:
                print("ready", flush=True)
                signal.pause()
            finally:
                open({str(marker)!r}, "w").close()

        main(["wait-forever"])
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 143
    assert marker.exists()
    assert stderr.strip() == "terminated"
