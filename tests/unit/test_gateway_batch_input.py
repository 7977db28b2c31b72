"""A batch input file is validated once, at upload: what validation produced is packed next
to the file and read back, unchanged, by the batch (`producers.gateway.batch_input`)."""

from __future__ import annotations

import json

import pytest

from producers.gateway import batch_input
from producers.gateway.errors import ApiError
from workers.settings import Settings

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look up.",
                                           "parameters": {"type": "object", "properties": {}}}}]


def settings(**fields: object) -> Settings:
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def line(custom_id: str, url: str, body: dict) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def test_what_validation_produced_comes_back_unchanged() -> None:
    content = jsonl([
        line("chat", "/v1/chat/completions", {
            "model": "m", "max_tokens": 9, "temperature": 0.2, "stop": "END", "seed": 4,
            "response_format": {"type": "json_schema",
                                "json_schema": {"schema": {"type": "object"}}},
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
        line("forced", "/v1/chat/completions", {
            "model": "m", "messages": [{"role": "user", "content": "call it"}],
            "tools": TOOLS, "tool_choice": "required"}),
        line("text", "/v1/completions", {"model": "m", "prompt": "Once", "max_tokens": 3}),
        line("vectors", "/v1/embeddings", {"model": "e", "input": ["a", "b"]}),
    ])
    validation = batch_input.validated(content, settings())
    assert validation.ok and len(validation.requests) == 4
    assert validation.requests[1].job.config.model_extra.get("rawTools")  # type: ignore[union-attr]
    assert batch_input.unpack(batch_input.pack(validation.requests)) == validation.requests


def test_lines_over_the_pools_limits_are_refused_naming_the_line() -> None:
    content = jsonl([
        line("ok", "/v1/embeddings", {"model": "e", "input": "fine"}),
        line("many", "/v1/embeddings", {"model": "e", "input": ["x"] * 5}),
        line("long", "/v1/completions", {"model": "m", "prompt": "y" * 50}),
    ])
    validation = batch_input.validated(content, settings(max_embed_texts=4,
                                                         max_prompt_chars=40))
    assert [r.custom_id for r in validation.requests] == ["ok"]
    assert [number for number, _ in validation.errors] == [2, 3]
    report = validation.report()
    assert "line 2: an embedding job may carry at most 4 texts" in report
    assert "LMQ_MAX_EMBED_TEXTS" in report and "line 3:" in report
    assert "LMQ_MAX_PROMPT_CHARS" in report


def test_a_file_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(ApiError, match="not UTF-8"):
        batch_input.validated(b"\xff\xfe{}\n", settings())


def test_requests_packed_in_another_format_are_not_read() -> None:
    import zlib

    assert batch_input.unpack(zlib.compress(b"0\n[1, \"a\", \"/v1/completions\", {}]")) is None
