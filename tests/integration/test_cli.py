"""The `lmq` CLI run as a subprocess against real Redis, real workers and the simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.local_pool import LocalPool
from producers.redis_server import RedisServer, free_port
from tests.support.pool import pool_on_database

CHAT = "llama-3.2-1b-instruct"
EMBED = "text-embedding-nomic-embed-text-v1.5"
LMQ = str(Path(sys.executable).parent / "lmq")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, sim: object) -> Iterator[LocalPool]:
    with pool_on_database(redis_server, sim, 5, [CHAT, EMBED]) as started:
        yield started


def lmq(env: dict[str, str], *args: str,
        timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    full.pop("LMQ_MODEL", None)
    return subprocess.run([LMQ, *args], env=full, capture_output=True, text=True,
                          timeout=timeout_s)


def ok(env: dict[str, str], *args: str) -> str:
    done = lmq(env, *args)
    assert done.returncode == 0, f"lmq {' '.join(args)}: {done.stderr}"
    return done.stdout


def test_chat_prints_content_and_stats(pool: LocalPool) -> None:
    out = ok(pool.env, "chat", CHAT, "Hello", "--max-tokens", "12", "--temperature", "0.2")
    assert "tok/s" in out and "first token" in out and "stop " in out and "queue wait" in out


def test_chat_json_and_system_prompt(pool: LocalPool) -> None:
    data = json.loads(ok(pool.env, "chat", CHAT, "Hi", "--system", "Be brief", "--json",
                         "--max-tokens", "8", "--seed", "7"))
    assert data["kind"] == "chat" and data["content"] and data["stats"]["predicted_tokens_count"]
    assert data["model"]["model_key"] == CHAT


def test_complete_stream_prints_the_text(pool: LocalPool) -> None:
    out = ok(pool.env, "complete", CHAT, "Roses are", "--stream", "--max-tokens", "20")
    text, stats = out.rstrip("\n").rsplit("\n", 1)
    assert text.strip() and stats.startswith("[") and "predicted" in stats


def test_embed_json(pool: LocalPool) -> None:
    data = json.loads(ok(pool.env, "embed", EMBED, "alpha", "beta", "--json"))
    assert data["kind"] == "embedding" and len(data["vectors"]) == 2 and data["dimension"] > 0


def test_no_wait_then_status_and_result(pool: LocalPool) -> None:
    job_id = ok(pool.env, "chat", CHAT, "Later", "--no-wait", "--max-tokens", "8").strip()
    assert len(job_id) == 36
    result = ok(pool.env, "result", job_id, "--timeout", "60", "--json")
    assert json.loads(result)["result"]["job_id"] == job_id
    assert json.loads(result)["config"] == {"maxTokens": 8}  # as sent, in the SDK's keys
    assert "config(maxTokens=8)" in ok(pool.env, "result", job_id)  # not masked
    status = json.loads(ok(pool.env, "status", job_id, "--json"))
    assert status["state"] == "SUCCESS" and status["model"] == CHAT
    assert f"{job_id}: SUCCESS" in ok(pool.env, "status", job_id)


def test_config_takes_any_sdk_key_and_options_win(pool: LocalPool) -> None:
    job_id = ok(pool.env, "chat", CHAT, "Configured", "--no-wait", "--max-tokens", "6",
                "--config", '{"maxTokens": 50, "repeatPenalty": 1.1, "min_p_sampling": 0.05}'
                ).strip()
    result = json.loads(ok(pool.env, "result", job_id, "--timeout", "60", "--json"))
    assert result["config"] == {"maxTokens": 6, "repeatPenalty": 1.1, "minPSampling": 0.05}
    assert result["result"]["stats"]["predicted_tokens_count"] <= 6
    for bad, words in (('{"maxTokenz": 5}', "did you mean 'maxTokens'"), ("[1]", "JSON object")):
        done = lmq(pool.env, "chat", CHAT, "hi", "--config", bad)
        assert done.returncode != 0 and words in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") <= 3


def test_user_mistakes_are_one_line(pool: LocalPool) -> None:
    cases = [("chat", "no-such-model", "hi"), ("chat", CHAT, "hi", "--temperature", "-1"),
             ("status", "nope"), ("chat", CHAT, "hi", "--json-schema", "{bad")]
    for args in cases:
        done = lmq(pool.env, *args)
        assert done.returncode != 0, args
        assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") <= 3, done.stderr
    unknown = lmq(pool.env, "chat", "no-such-model", "hi")
    assert "no live worker serves model 'no-such-model'" in unknown.stderr
    assert CHAT in unknown.stderr and "--enqueue-anyway" in unknown.stderr  # the flag to pass


def test_models_workers_doctor(pool: LocalPool) -> None:
    models = json.loads(ok(pool.env, "models", "--json"))
    by_key = {model["key"]: model for model in models}
    assert by_key[CHAT]["loaded"] and by_key[CHAT]["served_by"] == [pool.workers[0].hostname]
    assert by_key["qwen2.5-7b-instruct"]["loaded"] is False
    workers = json.loads(ok(pool.env, "workers", "--json"))
    assert workers["workers"][pool.workers[1].hostname]["models"] == [EMBED]
    assert set(workers["gpu"]) == {pool.settings.lmstudio_host}  # one host group, admission on
    # Nothing sets LMQ_GPU_MEMORY: the budget is this machine's GPU memory, or unknown.
    group = workers["gpu"][pool.settings.lmstudio_host]
    assert group["budget_bytes"] > 0 if group["host_memory_known"] else group["budget_bytes"] == -1
    assert workers["models"][CHAT]["succeeded"] >= 1  # the chats of the tests above
    table = ok(pool.env, "workers")
    assert "HOST GROUP" in table and pool.settings.lmstudio_host in table
    doctor = ok(pool.env, "doctor")
    assert doctor.count("ok  ") == 3 and "FAIL" not in doctor
    unknown = (f"warn  GPU group {pool.settings.lmstudio_host}: host memory unknown: set "
               "LMQ_GPU_MEMORY to guard model loads")
    known = f"info  GPU group {pool.settings.lmstudio_host}: "
    assert (unknown if not group["host_memory_known"] else known) in doctor


def test_models_prints_the_openmanus_config_for_a_chat_model(pool: LocalPool) -> None:
    snippet = ok(pool.env, "models", "--openmanus", CHAT)
    assert f'model = "{CHAT}"' in snippet and snippet.startswith("[llm]")
    wrong = lmq(pool.env, "models", "--openmanus", EMBED)
    assert wrong.returncode != 0 and "not a chat model" in wrong.stderr and CHAT in wrong.stderr


def test_doctor_fails_when_lmstudio_is_down(pool: LocalPool) -> None:
    env = {**pool.env, "LMQ_LMSTUDIO_HOST": f"127.0.0.1:{free_port()}"}
    done = lmq(env, "doctor")
    assert done.returncode == 1 and "FAIL  LM Studio" in done.stdout


def test_doctor_says_why_redis_fails_and_what_to_do() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    done = lmq({"LMQ_BROKER_URL": url, "LMQ_LMSTUDIO_HOST": f"127.0.0.1:{free_port()}"},
               "doctor")
    line = next(line for line in done.stdout.splitlines() if "Redis broker" in line)
    assert done.returncode == 1 and line.startswith(f"FAIL  Redis broker at {url}: ")
    assert "Connection refused" in line and "LMQ_BROKER_URL" in line, line


def test_config_show_masks_secrets() -> None:
    env = {"LMQ_BROKER_URL": "redis://user:hunter2@127.0.0.1:6399/0",
           "LMQ_FLOWER_BASIC_AUTH": "admin:swordfish"}
    out = ok(env, "config", "show")
    assert "hunter2" not in out and "swordfish" not in out
    assert "LMQ_BROKER_URL = redis://user:****@127.0.0.1:6399/0" in out
    assert "Celery broker URL" in out and "LMQ_SLOTS = 4" in out
