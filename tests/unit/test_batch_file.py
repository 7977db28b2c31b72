"""OpenAI batch lines -> jobs; per-line errors; output shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.batch import parse_model_map, validate_file
from producers.batch._output import error_line, output_line
from producers.batch._store import RequestInfo
from workers.contract import ChatJob, CompletionJob, EmbeddingJob
from workers.error import InvalidJobError, JobCancelledError


def line(custom_id: str, url: str, body: dict, **extra: object) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body,
                       **extra})


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.2, "max_completion_tokens": 7, "top_p": 0.9, "stop": "END", "seed": 3,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": {"name": "add", "parameters": {}}}],
        "presence_penalty": 0.1}


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_kind_maps_to_its_job(tmp_path: Path) -> None:
    path = write(tmp_path,
                 line("a", "/v1/chat/completions", CHAT),
                 line("b", "/v1/completions", {"model": "m", "prompt": ["Once"],
                                               "max_tokens": 5}),
                 line("c", "/v1/embeddings", {"model": "e", "input": "one"}),
                 line("d", "/v1/embeddings", {"model": "e", "input": ["x", "y"]}))
    result = validate_file(path, {"gpt-4o": "llama-3.2-1b-instruct"})
    assert result.ok, result.report()
    chat, completion, one, two = (r.job for r in result.requests)
    assert isinstance(chat, ChatJob) and chat.model == "llama-3.2-1b-instruct"
    assert chat.config.max_tokens == 7 and chat.config.stop == ["END"]
    assert chat.config.seed == 3 and chat.config.json_schema == {"type": "object"}
    assert chat.tools and chat.tools[0].function.name == "add"
    assert isinstance(completion, CompletionJob) and completion.prompt == "Once"
    assert isinstance(one, EmbeddingJob) and one.texts == ["one"]
    assert isinstance(two, EmbeddingJob) and two.texts == ["x", "y"]
    assert [r.line for r in result.requests] == [1, 2, 3, 4]


def test_bad_lines_are_each_reported_with_their_number(tmp_path: Path) -> None:
    path = write(tmp_path,
                 line("ok", "/v1/chat/completions", CHAT),
                 "{not json",
                 line("u", "/v1/images", {"model": "m"}),
                 line("ok", "/v1/completions", {"model": "m", "prompt": "p"}),
                 line("t", "/v1/chat/completions", {**CHAT, "temperature": -1}),
                 line("e", "/v1/embeddings", {"model": "m", "input": [1, 2]}),
                 json.dumps({"method": "POST", "url": "/v1/completions", "body": {}}),
                 line("g", "/v1/chat/completions", {"model": "m", "messages": []}),
                 line("s", "/v1/chat/completions", {**CHAT, "stream": True}))
    result = validate_file(path)
    assert not result.ok
    errors = dict(result.errors)
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "not valid JSON" in errors[2]
    assert "url must be one of" in errors[3]
    assert "duplicate custom_id 'ok' (first on line 1)" in errors[4]
    assert "temperature" in errors[5]
    assert "token arrays" in errors[6]
    assert "custom_id" in errors[7]
    assert "messages" in errors[8]
    assert "stream" in errors[9]
    assert "line 5:" in result.report()


def test_empty_file_is_not_ok(tmp_path: Path) -> None:
    result = validate_file(write(tmp_path, ""))
    assert not result.ok and "no requests" in result.report()


def test_model_map_parsing() -> None:
    assert parse_model_map(["a=b", "c=d=e"]) == {"a": "b", "c": "d=e"}
    with pytest.raises(ValueError, match="NAME=MODEL"):
        parse_model_map(["nope"])


INFO = RequestInfo("job-1", "req-1", "/v1/chat/completions", 1, "llama")
TIMING = {"started_at": 1.0, "finished_at": 1700000000.5, "run_s": 0.5}
MODEL = {"model_key": "llama"}


def test_chat_output_shape_with_tool_calls_and_stats() -> None:
    result = {"kind": "chat", "content": "", "model": MODEL, "timing": TIMING, "worker": "w",
              "tool_calls": [{"id": "c1", "type": "function",
                              "function": {"name": "add", "arguments": "{}"}}],
              "stats": {"stop_reason": "toolCalls", "prompt_tokens_count": 5,
                        "predicted_tokens_count": 3, "total_tokens_count": 8}}
    out = output_line(INFO, result)
    assert out["custom_id"] == "req-1" and out["error"] is None
    assert out["response"]["status_code"] == 200 and out["response"]["request_id"] == "job-1"
    body = out["response"]["body"]
    assert body["object"] == "chat.completion" and body["created"] == 1700000000
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "add"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert body["lmq_stats"]["stats"]["stop_reason"] == "toolCalls"


def test_embedding_and_completion_shapes() -> None:
    emb = {"kind": "embedding", "vectors": [[0.1, 0.2], [0.3, 0.4]], "dimension": 2,
           "token_counts": [1, 2], "total_tokens": 3, "model": MODEL, "timing": TIMING}
    body = output_line(INFO, emb)["response"]["body"]
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][1] == {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]}
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    comp = {"kind": "completion", "content": "text", "model": MODEL, "timing": TIMING,
            "stats": {"stop_reason": "maxPredictedTokensReached"}}
    body = output_line(INFO, comp)["response"]["body"]
    assert body["object"] == "text_completion"
    assert body["choices"][0] == {"index": 0, "text": "text", "logprobs": None,
                                  "finish_reason": "length"}


def test_error_lines() -> None:
    bad = error_line(INFO, "FAILURE", InvalidJobError("too long"))
    assert bad["response"]["status_code"] == 400
    assert bad["response"]["body"]["error"]["message"] == "too long"
    partial = {"kind": "chat", "content": "half", "model": MODEL, "timing": TIMING,
               "stats": {"stop_reason": "userStopped"}, "cancelled": True}
    cancelled = error_line(INFO, "REVOKED", JobCancelledError("cancelled", partial))
    assert cancelled["error"]["code"] == "batch_cancelled"
    assert cancelled["response"]["body"]["choices"][0]["message"]["content"] == "half"
