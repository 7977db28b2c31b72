"""`lmq batch submit|status|cancel|results` end to end, each step its own CLI process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.integration.corpus_support import EMBED, LLM, lmq
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(240)]


@pytest.fixture()
def workers(worker_factory, lmq_env):  # type: ignore[no-untyped-def]
    return [worker_factory(LLM, lmq_env), worker_factory(EMBED, lmq_env)]


def request(custom_id: str, url: str, body: dict[str, object]) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def chat(custom_id: str, max_tokens: int, **extra: object) -> str:
    return request(custom_id, "/v1/chat/completions",
                   {"model": "gpt-4o-mini", "max_tokens": max_tokens, **extra,
                    "messages": [{"role": "user", "content": f"Say something {custom_id}"}]})


def submit(path: Path, env: dict[str, str]) -> str:
    done = lmq("batch", "submit", str(path), "--model-map", f"gpt-4o-mini={LLM}", "--json",
               env=env)
    return str(json.loads(done.stdout)["batch_id"])


def status(batch_id: str, env: dict[str, str]) -> dict[str, object]:
    return json.loads(lmq("batch", "status", batch_id, "--json", env=env).stdout)


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_submit_and_results_in_openai_format(workers, lmq_env, tmp_path):  # type: ignore[no-untyped-def]
    lines = [chat("c1", 8, temperature=0.1, seed=1),
             chat("c2", 300, response_format={"type": "json_schema", "json_schema": {
                 "name": "o", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}
             }}),
             request("p1", "/v1/completions", {"model": LLM, "prompt": "Once", "max_tokens": 5}),
             request("e1", "/v1/embeddings", {"model": EMBED, "input": ["one", "two"]})]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n")
    batch_id = submit(path, lmq_env)
    wait_until(lambda: status(batch_id, lmq_env)["finished"] == 4, timeout=90,
               interval=0.5, message="all four requests finished")
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    done = lmq("batch", "results", batch_id, "--out", str(out), "--errors", str(errors),
               env=lmq_env)
    assert "4 results" in done.stdout and "0 errors" in done.stdout
    assert errors.read_text() == ""
    results = {r["custom_id"]: r for r in read_jsonl(out)}
    assert list(results) == ["c1", "c2", "p1", "e1"]
    c1 = results["c1"]["response"]  # type: ignore[index]
    assert c1["status_code"] == 200 and c1["request_id"]
    body = c1["body"]
    assert body["object"] == "chat.completion" and body["model"] == LLM
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] == 8 and body["choices"][0]["finish_reason"]
    assert body["lmq_stats"]["stats"]["stop_reason"] == "maxPredictedTokensReached"
    assert body["lmq_stats"]["worker"] and body["lmq_stats"]["timing"]["run_s"] > 0
    parsed = json.loads(results["c2"]["response"]["body"]["choices"][0]["message"]["content"])  # type: ignore[index]
    assert isinstance(parsed, dict)
    assert results["p1"]["response"]["body"]["object"] == "text_completion"  # type: ignore[index]
    emb = results["e1"]["response"]["body"]  # type: ignore[index]
    assert emb["object"] == "list" and len(emb["data"]) == 2
    assert len(emb["data"][1]["embedding"]) == 768 and emb["usage"]["total_tokens"] > 0
    info = status(batch_id, lmq_env)
    assert info["counts"] == {"SUCCESS": 4} and info["total"] == 4


def test_bad_lines_are_reported_and_nothing_is_enqueued(workers, lmq_env, redis_url, tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.jsonl"
    long = request("long", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "x" * 300}]})
    path.write_text("\n".join([chat("a", 4), "{oops", chat("a", 4),
                               request("x", "/v1/embeddings", {"model": EMBED, "input": []}),
                               long]))
    done = lmq("batch", "submit", str(path), env={**lmq_env, "LMQ_MAX_PROMPT_CHARS": "200"},
               check=False)
    assert done.returncode == 2
    assert "nothing enqueued" in done.stderr
    assert "line 2: not valid JSON" in done.stderr
    assert "line 3: duplicate custom_id 'a' (first on line 1)" in done.stderr
    assert "line 4: body.input" in done.stderr
    # The size limits are checked with the lines (the jobs are not checked again at submit)
    assert "line 5: the prompt has " in done.stderr
    assert "more than the limit of 200 (LMQ_MAX_PROMPT_CHARS)" in done.stderr
    client = redis.Redis.from_url(redis_url)
    assert not client.keys("lmq:batch:*")
    assert client.llen(f"lmq.{LLM}") == 0 and client.llen(f"lmq.{EMBED}") == 0
    unknown = lmq("batch", "status", "batch_nope", env=lmq_env, check=False)
    assert unknown.returncode != 0 and "no batch 'batch_nope'" in unknown.stderr


def test_cancel_midway_keeps_finished_and_partial_results(workers, lmq_env, simulator, tmp_path):  # type: ignore[no-untyped-def]
    # The slow ones take ~200 s each at 10 tok/s, longer than any wait of this test: none
    # can end before the cancel however slowly the CLI processes start (at 200 tok/s, ~10 s
    # each, two ended first on a loaded machine: "revoked 6 jobs, 4 had already finished").
    simulator.admin.set_timing(reply_min_tokens=2000, reply_max_tokens=2000,
                               decode_tokens_per_s=10)
    quick = [chat(f"q{i}", 4) for i in range(2)]
    slow = [chat(f"s{i}", 2000) for i in range(8)]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(quick + slow) + "\n")
    batch_id = submit(path, lmq_env)

    def some_running() -> bool:
        counts = status(batch_id, lmq_env)["counts"]
        running = counts.get("PROGRESS", 0) + counts.get("STARTED", 0)  # type: ignore[union-attr]
        return counts.get("SUCCESS", 0) >= 2 and running >= 1  # type: ignore[union-attr]

    wait_until(some_running, timeout=60, interval=0.3,
               message=lambda: f"quick ones done, slow running: {status(batch_id, lmq_env)}")
    cancelled = lmq("batch", "cancel", batch_id, env=lmq_env)
    assert "revoked 8 jobs" in cancelled.stdout
    wait_until(lambda: status(batch_id, lmq_env)["finished"] == 10, timeout=60, interval=0.3,
               message="every job finished or revoked")
    info = status(batch_id, lmq_env)
    assert info["counts"] == {"REVOKED": 8, "SUCCESS": 2} and info["cancelled_at"]
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    lmq("batch", "results", batch_id, "--out", str(out), "--errors", str(errors), env=lmq_env)
    assert [r["custom_id"] for r in read_jsonl(out)] == ["q0", "q1"]
    failed = read_jsonl(errors)
    assert [r["custom_id"] for r in failed] == [f"s{i}" for i in range(8)]
    assert all(r["error"]["code"] == "batch_cancelled" for r in failed)  # type: ignore[index]
    partial = [r for r in failed if r["response"]["body"]]  # type: ignore[index]
    assert partial, "the running requests keep their partial text"
    content = partial[0]["response"]["body"]["choices"][0]["message"]["content"]  # type: ignore[index]
    assert content
