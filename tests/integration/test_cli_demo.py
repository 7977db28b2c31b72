"""`lmq demo` end to end as on a fresh machine: nothing answers at the configured Redis and
LM Studio, so it starts its own redis-server, the simulator and two workers, runs the three
jobs, prints them with their stats, and stops everything it started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from producers.redis_server import free_port

LMQ = str(Path(sys.executable).parent / "lmq")


@pytest.mark.timeout(300)
def test_demo_starts_what_is_missing_and_runs_three_jobs() -> None:
    env = {**os.environ, "LMQ_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
           "LMQ_LMSTUDIO_HOST": f"127.0.0.1:{free_port()}"}
    for name in ("LMQ_RESULT_BACKEND", "LMQ_REDIS_URL", "LMQ_MODEL"):
        env.pop(name, None)
    # The deterministic engine keeps this fast; test_real_engine.py runs the real one.
    done = subprocess.run([LMQ, "demo", "--sim-engine", "deterministic"], env=env,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "starting a private redis-server" in done.stderr
    assert "starting the simulator" in done.stderr
    for label in ("== chat (llama-3.2-1b-instruct)", "== completion (llama-3.2-1b-instruct)",
                  "== embedding (text-embedding-nomic-embed-text-v1.5)"):
        assert label in done.stdout
    assert done.stdout.count("first token") == 2 and "dimension 768" in done.stdout
    completion = done.stdout.split("== completion (llama-3.2-1b-instruct)")[1].splitlines()
    assert completion[1].startswith("The three primary colors are")  # the prompt it continues
    assert done.stdout.count("queue wait") == 3
    assert "stopping what it started" in done.stderr
