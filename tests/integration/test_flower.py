"""`celery -A workers flower` with nothing else typed, against real workers and the simulator.

Flower needs auth: without any it refuses to start (one line, exit 78); with
LMQ_FLOWER_ALLOW_NO_AUTH it runs on 127.0.0.1 with its API off; Flower's own basic auth or
OAuth also count. Flower's HTTP API with basic auth from LMQ_FLOWER_BASIC_AUTH; job
arguments shortened and safe; results with the stats; revoke (and terminate) through the
API cancel the prediction.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from producers.flower_process import FlowerProcess, flower_command, free_port
from tests.e2e.support import (
    AUTH,
    EMBED_MODEL,
    MODEL,
    cancels_sent,
    flower_env,
    flower_task,
    job_queue,
    long_replies,
    start_flower,
    wait_backend_state,
    wait_flower_state,
)
from tests.support.wait import wait_until
from workers.flower.config import EXIT_NO_AUTH, NO_AUTH_REFUSAL

pytestmark = pytest.mark.slow


@pytest.fixture()
def flowers(request: pytest.FixtureRequest) -> Iterator[list[FlowerProcess]]:
    started: list[FlowerProcess] = []
    yield started
    failed = getattr(request.node, "rep_call", None)
    for flower in started:
        flower.stop()
        if failed is not None and failed.failed:
            print(f"\n--- Flower log tail ---\n{flower.log_tail()}")


def test_api_needs_the_basic_auth_from_settings(lmq_env, flowers):
    flower = start_flower(flower_env(lmq_env), flowers, wait_for_worker_events=False)
    assert httpx.get(f"{flower.url}/api/workers").status_code == 401
    assert httpx.get(f"{flower.url}/tasks").status_code == 401
    assert httpx.get(f"{flower.url}/api/tasks", auth=("admin", "wrong")).status_code == 401
    assert httpx.get(f"{flower.url}/api/tasks", auth=AUTH).status_code == 200
    assert _listen_addresses(flower.port) - {"127.0.0.1"}, "with auth: all interfaces"
    assert AUTH[1] not in flower.log_tail(500)


def test_without_auth_flower_refuses_to_start_with_one_clear_line(lmq_env, tmp_path):
    # A clean environment and working directory: no auth from the shell or a .env file.
    env = {**_without_auth(os.environ), **lmq_env, "LMQ_FLOWER_PORT": str(free_port())}
    done = subprocess.run(flower_command(), env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == EXIT_NO_AUTH, done.stdout + done.stderr
    assert done.stderr.splitlines() == [NO_AUTH_REFUSAL], done.stderr  # no traceback
    assert "LMQ_FLOWER_BASIC_AUTH=user:password" in NO_AUTH_REFUSAL
    assert done.stdout == ""


def test_opted_out_of_auth_flower_binds_localhost_and_keeps_the_api_off(lmq_env, flowers):
    env = {**lmq_env, "LMQ_FLOWER_BASIC_AUTH": "", "LMQ_FLOWER_ALLOW_NO_AUTH": "true"}
    flower = start_flower(env, flowers, wait_for_worker_events=False)
    assert "Flower runs WITHOUT auth (LMQ_FLOWER_ALLOW_NO_AUTH=true)" in flower.log_tail()
    assert _listen_addresses(flower.port) == {"127.0.0.1"}
    assert httpx.get(f"{flower.url}/tasks").status_code == 200
    response = httpx.post(f"{flower.url}/api/task/revoke/some-id")
    assert response.status_code == 401


@pytest.mark.parametrize(("extra_env", "args", "locked"), [
    ({"FLOWER_BASIC_AUTH": "own:auth-pass"}, (), 401),
    ({}, ("--basic-auth=own:auth-pass",), 401),
    ({}, (r"--auth=.*@example\.com",), 302),  # OAuth: the UI redirects to the login page
], ids=["FLOWER_BASIC_AUTH", "--basic-auth", "--auth"])
def test_flowers_own_auth_counts_as_auth(lmq_env, flowers, extra_env, args, locked):
    env = {**lmq_env, "LMQ_FLOWER_BASIC_AUTH": "", **extra_env}
    flower = FlowerProcess(env, args=args)
    flowers.append(flower)
    flower.start()
    assert httpx.get(f"{flower.url}/tasks").status_code == locked
    assert "auth-pass" not in flower.log_tail(500)


def _without_auth(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if not k.startswith(("LMQ_FLOWER_", "FLOWER_"))}


def test_a_job_shows_with_short_safe_args_and_its_stats(lmq_env, worker_factory, flowers):
    env = flower_env(lmq_env)
    worker_factory(MODEL, env)
    flower = start_flower(env, flowers)
    prompt = "Summarise this. " + "x" * 300_000 + " key sk-abcdefghijklmnop1234"
    handle = job_queue(env).chat(MODEL, prompt, config={"max_tokens": 12, "temperature": 0.4})
    result = handle.result(timeout=60)

    task = wait_flower_state(flower, handle.id, {"SUCCESS"})
    assert task["name"] == "lmq.chat"
    assert len(task["args"]) < 1200
    assert "config(maxTokens=12, temperature=0.4)" in task["args"]  # as sent; not a secret
    page = httpx.get(f"{flower.url}/task/{handle.id}", auth=AUTH).text
    assert "sk-abcdefghijklmnop1234" not in page
    assert "lmq.chat" in page and "SUCCESS" in page
    assert f"predicted tokens {result.stats.predicted_tokens_count}" in page
    assert "ttft " in page and f"stop {result.stats.stop_reason}" in page


def test_max_tasks_comes_from_settings(lmq_env, worker_factory, flowers):
    env = flower_env(lmq_env, LMQ_FLOWER_MAX_TASKS="3")
    worker_factory(MODEL, env)
    flower = start_flower(env, flowers)
    queue = job_queue(env)
    handles = [queue.complete(MODEL, f"count {i}", config={"max_tokens": 4}) for i in range(6)]
    for handle in handles:
        handle.result(timeout=60)
    wait_flower_state(flower, handles[-1].id, {"SUCCESS"})
    tasks = httpx.get(f"{flower.url}/api/tasks", auth=AUTH).json()
    assert 0 < len(tasks) <= 3


@pytest.mark.parametrize("terminate", [False, True], ids=["revoke", "terminate"])
def test_api_revoke_cancels_the_prediction(lmq_env, simulator, worker_factory, flowers,
                                           terminate):
    env = flower_env(lmq_env)
    worker_factory(MODEL, env)
    flower = start_flower(env, flowers)
    long_replies(simulator)
    handle = job_queue(env).chat(MODEL, "Tell me a long story")
    wait_backend_state(handle, {"PROGRESS"})
    wait_until(lambda: _fragments_streamed(simulator), timeout=20)

    response = httpx.post(f"{flower.url}/api/task/revoke/{handle.id}",
                          params={"terminate": str(terminate).lower()}, auth=AUTH)
    assert response.status_code == 200, response.text

    wait_until(lambda: cancels_sent(simulator), timeout=20, message="cancel at the simulator")
    assert wait_backend_state(handle, {"REVOKED"}) == "REVOKED"
    wait_flower_state(flower, handle.id, {"REVOKED"})
    page = httpx.get(f"{flower.url}/task/{handle.id}", auth=AUTH).text
    assert "CANCELLED, partial result" in page
    assert "stop userStopped" in page


def _fragments_streamed(simulator) -> bool:
    return any(c.get("fragments", 0) > 2 for c in simulator.admin.channels())


def _listen_addresses(port: int) -> set[str]:
    """Local addresses listening on `port` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(_address(address))
    return found


def _address(hex_address: str) -> str:
    if len(hex_address) == 8:
        return ".".join(str(int(hex_address[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return "::" if set(hex_address) == {"0"} else hex_address


def test_queued_jobs_show_from_their_task_sent_event(lmq_env, flowers):
    from producers.celery_app import producer_app
    from producers.sent_events import send_sent_events
    from workers.contract import TASK_EMBED, queue_name
    from workers.settings import Settings

    env = flower_env(lmq_env)
    flower = start_flower(env, flowers, wait_for_worker_events=False)  # no worker: jobs stay queued
    queue = job_queue(env)
    handles = [queue.embed(EMBED_MODEL, f"text {i}", enqueue_anyway=True) for i in range(2)]
    app = producer_app(Settings(broker_url=env["LMQ_BROKER_URL"]))
    job = {"kind": "embedding", "model": EMBED_MODEL, "texts": ["text"]}

    def shown() -> bool:
        # Events are broadcast: those sent before Flower's event consumer subscribed (it
        # starts after the HTTP server answers) are gone, so send them again until seen.
        sent = send_sent_events(app, [(h.id, TASK_EMBED, job, queue_name(EMBED_MODEL))
                                      for h in handles])
        assert sent == 2
        return all(flower_task(flower, h.id) for h in handles)

    wait_until(shown, timeout=30, interval=0.5, message="Flower showing the queued jobs")
    for handle in handles:
        task = wait_flower_state(flower, handle.id, {"PENDING"})
        assert task["name"] == "lmq.embed"
        assert EMBED_MODEL in task["args"] and "texts=1" in task["args"]
