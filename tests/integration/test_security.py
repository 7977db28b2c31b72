"""Security: JSON only, Redis with a password, secrets never shown, size limits.

Flower's own auth (401 without LMQ_FLOWER_BASIC_AUTH credentials, API off and 127.0.0.1
only when unset) is tested in test_flower.py; here: what an authenticated Flower shows
does not carry the broker password. TLS (rediss://) is in test_security_tls.py.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from producers.celery_app import producer_app
from producers.publisher import task_message
from producers.redis_server import RedisServer
from tests.e2e.support import AUTH, start_flower
from tests.faults.support import LLM, job_queue, wait_finished
from tests.support.services import start_redis
from tests.support.wait import wait_until
from workers.contract import ChatJob
from workers.error import InvalidJobError
from workers.settings import Settings

pytestmark = [pytest.mark.timeout(240)]
PASSWORD = "Br0ker-Pw-" + uuid.uuid4().hex[:8]
FLOWER_PASSWORD = AUTH[1]
LMQ = str(Path(sys.executable).parent / "lmq")


@pytest.fixture()
def locked_redis() -> Iterator[RedisServer]:
    server = start_redis(password=PASSWORD)
    yield server
    server.stop()


def env_for(url: str, simulator, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"LMQ_BROKER_URL": url, "LMQ_RESULT_BACKEND": url, "LMQ_GPU_MEMORY": "24GiB",
            "LMQ_LMSTUDIO_HOST": simulator.host, "PYTHONUNBUFFERED": "1", **extra}


def pickled_message(url: str, prompt: str) -> tuple[str, str]:
    job_id = str(uuid.uuid4())
    envelope = json.loads(task_message(producer_app(Settings(broker_url=url)), job_id,
                                       ChatJob(model=LLM, messages=prompt)))
    body = ((ChatJob(model=LLM, messages=prompt).model_dump(mode="json"),), {}, {})
    envelope["body"] = base64.b64encode(pickle.dumps(body)).decode()
    envelope["content-type"] = "application/x-python-serialize"
    envelope["content-encoding"] = "binary"
    return job_id, json.dumps(envelope)


def test_pickled_message_is_rejected_and_the_worker_keeps_serving(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker = worker_factory(LLM, lmq_env)
    job_id, message = pickled_message(redis_url, "pickled prompt")
    redis.Redis.from_url(redis_url).lpush(f"lmq.{LLM}", message)
    wait_until(lambda: "Refusing to deserialize" in worker.log_tail(300), timeout=60,
               message=lambda: f"the refusal in the log:\n{worker.log_tail()}")
    with job_queue(redis_url) as queue:
        good = queue.chat(LLM, "json is fine", config={"max_tokens": 3})
        assert good.result(timeout=60).stats.predicted_tokens_count == 3
        assert queue.handle(job_id).status() == "PENDING"  # the pickled job never ran
    assert worker.is_running()
    prompts = json.dumps(simulator.admin.log(type="channelCreate"))
    assert "pickled prompt" not in prompts


def test_redis_with_password_works_and_no_secret_is_logged(
        locked_redis, worker_factory, simulator):  # type: ignore[no-untyped-def]
    assert PASSWORD in locked_redis.url
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=locked_redis.port).set("x", 1)
    worker = worker_factory(LLM, env_for(locked_redis.url, simulator))
    with job_queue(locked_redis.url) as queue:
        handles = [queue.chat(LLM, f"behind a password {i}", config={"max_tokens": 4})
                   for i in range(3)]
        found = wait_finished(queue, [h.id for h in handles], timeout=90)
    assert {state for state, _ in found.values()} == {"SUCCESS"}
    worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert f":**@127.0.0.1:{locked_redis.port}" in log  # Celery masks it when it logs the URL
    assert PASSWORD not in log


def test_config_show_masks_secrets() -> None:
    url = f"redis://user:{PASSWORD}@127.0.0.1:6390/0"
    env = {**os.environ, "LMQ_BROKER_URL": url, "LMQ_RESULT_BACKEND": url,
           "LMQ_FLOWER_BASIC_AUTH": f"admin:{FLOWER_PASSWORD}"}
    for args in (["config", "show"], ["config", "show", "--json"]):
        proc = subprocess.run([LMQ, *args], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "127.0.0.1:6390" in proc.stdout  # the setting is shown...
        assert PASSWORD not in proc.stdout + proc.stderr  # ...without its secrets
        assert FLOWER_PASSWORD not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_flower_shows_no_broker_password(locked_redis, worker_factory, simulator):  # type: ignore[no-untyped-def]
    env = env_for(locked_redis.url, simulator,
                  LMQ_FLOWER_BASIC_AUTH=f"{AUTH[0]}:{FLOWER_PASSWORD}")
    worker_factory(LLM, env)
    started: list = []  # type: ignore[type-arg]
    try:
        flower = start_flower(env, started)  # inside: stopped even if it never sees the worker
        with job_queue(locked_redis.url) as queue:
            handle = queue.chat(LLM, "shown in flower", config={"max_tokens": 3})
            handle.result(timeout=60)
        shown = wait_until(lambda: _flower_text(flower.url, handle.id), timeout=60,
                           message="the job in Flower")
        assert "shown in flower" in shown
        assert PASSWORD not in shown and FLOWER_PASSWORD not in shown
        assert PASSWORD not in flower.log_tail(500)
    finally:
        for process in started:
            process.stop()


def _flower_text(url: str, job_id: str) -> str:
    pages = [httpx.get(f"{url}{path}", auth=AUTH, timeout=10)
             for path in (f"/api/task/info/{job_id}", "/api/workers?refresh=1",
                          f"/task/{job_id}")]
    if any(page.status_code != 200 for page in pages):
        return ""
    return "\n".join(page.text for page in pages)


def test_prompt_over_the_size_limit_is_refused_clearly(redis_url) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(broker_url=redis_url, result_backend=redis_url, max_prompt_chars=1000)
    from producers import JobQueue

    with JobQueue(settings) as queue, pytest.raises(InvalidJobError, match="LMQ_MAX_PROMPT_CHARS"):
        queue.chat(LLM, "x" * 1001, enqueue_anyway=True)


def test_batch_file_over_the_size_limit_is_refused_clearly(redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": LLM, "messages": [{"role": "user", "content": "y" * 600 * i}]}}
             for i in range(1, 4)]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    env = {**os.environ, "LMQ_BROKER_URL": redis_url, "LMQ_RESULT_BACKEND": redis_url,
           "LMQ_MAX_PROMPT_CHARS": "1000"}
    proc = subprocess.run([LMQ, "batch", "submit", str(requests), "--enqueue-anyway"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr and "1000" in proc.stderr, proc.stderr
    assert redis.Redis.from_url(redis_url).llen(f"lmq.{LLM}") == 0  # nothing enqueued
