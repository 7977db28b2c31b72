"""The SDK's documented examples, one script, run with only its import line changed.

`sdk_examples/documented.py` is written for `import lmstudio as lms`; run as written at the
simulator and with `from producers import sdk as lms` through real workers (each in its own
Python process), it must print the same thing: the same text, types, stop reasons, callback
order, tool calls and vectors (the simulator's engine is deterministic)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.local_pool import LocalPool
from producers.redis_server import RedisServer
from tests.support.pool import pool_on_database

SCRIPT = Path(__file__).with_name("sdk_examples") / "documented.py"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, sim: object) -> Iterator[LocalPool]:
    with pool_on_database(redis_server, sim, 10, ["llama-3.2-1b-instruct",
                                                  "text-embedding-nomic-embed-text-v1.5"]) as p:
        yield p


def run(script: str, pool: LocalPool, sim: object, tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(script)
    env = {**os.environ, "LM_HOST": sim.host,  # type: ignore[attr-defined]
           "LMQ_BROKER_URL": pool.settings.broker_url,
           "LMQ_RESULT_BACKEND": pool.settings.backend_url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(path)], env=env, capture_output=True,
                          text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, f"{name} failed:\n{done.stderr[-3000:]}\n{pool.log_tails()}"
    return done.stdout


def submitted(pool: LocalPool) -> list[bytes]:
    return list(pool.queue.store_client.scan_iter(match="lmq:job:*"))


def test_the_documented_examples_print_the_same_through_the_pool(
        pool: LocalPool, sim: object, tmp_path: Path) -> None:
    original = SCRIPT.read_text()
    assert original.count("import lmstudio as lms\n") == 1
    switched = original.replace("import lmstudio as lms\n", "from producers import sdk as lms\n")
    direct = run(original, pool, sim, tmp_path, "direct")
    jobs_before = len(submitted(pool))
    pooled = run(switched, pool, sim, tmp_path, "pooled")
    assert pooled == direct
    # 3 responses, 2 turns, 2 act rounds, 1 embedding: each one job of the pool
    assert len(submitted(pool)) - jobs_before == 8
    lines = pooled.splitlines()
    assert lines[1].startswith("PredictionResult ")
    assert "['progress 0%', 'progress 100%', 'first token', 'fragment', 'message assistant']" \
        in lines
    assert "assistant multiply {'a': 12.0, 'b': 7.0}" in lines and "tool 84.0" in lines
    assert "rounds 2" in lines
