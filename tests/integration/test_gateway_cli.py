"""`lmq serve` and `python -m producers.gateway` as a user runs them: real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.wait import wait_until

LMQ = str(Path(sys.executable).with_name("lmq"))
pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def env_for(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMQ_")}
    return {**env, "LMQ_BROKER_URL": redis_url, "PYTHONUNBUFFERED": "1", **extra}


def health(port: int) -> dict | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
    except httpx.HTTPError:
        return None


def test_serve_without_keys_says_so_and_listens_on_loopback(redis_url: str,
                                                            tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([LMQ, "serve", "--port", str(port)], env=env_for(redis_url),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        answer = wait_until(lambda: health(port), timeout=60,
                            message=lambda: f"the gateway's /health; log:\n{log.read_text()}")
        assert answer == {"status": "ok", "models": [], "workers": 0}
        said = log.read_text()
        assert "no LMQ_API_KEYS set: no auth, listening on 127.0.0.1 only" in said
        assert f"http://127.0.0.1:{port}/v1" in said
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
        assert models == {"object": "list", "data": []}  # no key needed, no worker yet
        # DNS rebinding: a browser page whose domain now resolves to 127.0.0.1 sends its
        # own name as Host; only loopback names are answered without keys.
        assert httpx.get(f"http://localhost:{port}/health", timeout=5).status_code == 200
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.evil.test"):
            refused = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5,
                                headers={"Host": host})
            assert refused.status_code == 400, host
            error = refused.json()["error"]
            assert error["code"] == "host_not_allowed", error
            assert "localhost or a loopback address only" in error["message"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()


def test_other_addresses_without_keys_are_refused_in_one_line(redis_url: str) -> None:
    for command in ([LMQ, "serve", "--host", "0.0.0.0"],
                    [sys.executable, "-m", "producers.gateway", "--host", "0.0.0.0"]):
        done = subprocess.run(command, env=env_for(redis_url), capture_output=True, text=True,
                              timeout=60)
        assert done.returncode != 0, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "set LMQ_API_KEYS" in lines[0], done.stderr


def test_a_bad_key_setting_is_one_line_and_exit_78(redis_url: str) -> None:
    for command in ([LMQ, "serve"], [sys.executable, "-m", "producers.gateway"]):
        done = subprocess.run(command, env=env_for(redis_url, LMQ_API_KEYS="k=team:urgent"),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 78, command  # systemd's RestartPreventExitStatus
        assert done.stderr.strip().splitlines() == [
            "lmq serve: LMQ_API_KEYS entry 1 (tenant 'team'): priority 'urgent' is not one "
            "of high, normal, low"]


def test_hash_key_prints_the_form_for_the_setting() -> None:
    done = subprocess.run([LMQ, "serve", "--hash-key", "abc"], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == ("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb4"
                                   "10ff61f20015ad")
