"""How a benchmark script runs: stopped with Ctrl-C or SIGTERM, it stops what it started.

A benchmark starts its own redis-server, simulator and workers in `with` blocks. Ctrl-C
unwinds them; SIGTERM (`kill`, `timeout`, a CI runner giving up) would kill the script on
the spot and leave them running. `run(main)` makes SIGTERM take Ctrl-C's path, as the
`lmq` commands do (`producers.cli.sigterm_interrupts`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from producers.cli import Terminated, sigterm_interrupts


def run(main: Callable[[], object]) -> int:
    """`main()`'s exit code; stopped, the shell's code for the signal and one line."""
    try:
        with sigterm_interrupts():
            code = main()
    except KeyboardInterrupt as exc:
        print("benchmark stopped; what it started was stopped too", file=sys.stderr)
        return exc.exit_code if isinstance(exc, Terminated) else 130
    return code if isinstance(code, int) else 0
