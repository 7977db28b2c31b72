"""Message, tool and config conversions of the OpenManus adapter (no OpenManus needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from types import SimpleNamespace

import pytest

from producers.openmanus._config import config_snippet, openmanus_llm_values
from producers.openmanus._messages import (
    Reply,
    completion_message,
    openai_tool_call,
    raw_tools,
    split_system,
    to_history,
)

CALL = {"id": "c1", "type": "function",
        "function": {"name": "echo", "arguments": '{"text": "hi"}'}}


def test_history_merges_system_and_consecutive_turns() -> None:
    history = to_history([
        {"role": "system", "content": "A"}, {"role": "user", "content": "one"},
        {"role": "user", "content": "two"}, {"role": "system", "content": "B"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "HI", "tool_call_id": "c1", "name": "echo"},
        {"role": "tool", "content": "again", "tool_call_id": "c2"},
    ])["messages"]
    assert [m["role"] for m in history] == ["system", "user", "assistant", "tool"]
    assert history[0]["content"] == [{"type": "text", "text": "A\n\nB"}]
    assert [p["text"] for p in history[1]["content"]] == ["one", "two"]
    assert history[2]["content"][1]["toolCallRequest"] == {
        "type": "function", "id": "c1", "name": "echo", "arguments": {"text": "hi"}}
    assert [p["toolCallId"] for p in history[3]["content"]] == ["c1", "c2"]


def test_history_is_accepted_by_the_sdk() -> None:
    import lmstudio as lms

    chat = lms.Chat.from_history(to_history([
        {"role": "user", "content": "x"}, {"role": "assistant", "content": None,
                                           "tool_calls": [CALL]},
        {"role": "tool", "content": "X", "tool_call_id": "c1"}]))
    assert len(chat._get_history_for_prediction()["messages"]) == 3


@pytest.mark.parametrize(("raw", "expected"), [
    ('{"a": 1}', {"a": 1}), ("", {}), (None, {}), ("[1, 2]", {"value": [1, 2]}),
    ("{not json", {"_raw_arguments": "{not json"}), ({"a": 2}, {"a": 2}),
])
def test_tool_call_arguments_become_objects(raw, expected) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": raw}}
    history = to_history([{"role": "assistant", "content": "", "tool_calls": [call]}])
    assert history["messages"][0]["content"][1]["toolCallRequest"]["arguments"] == expected


def test_images_need_an_uploader_and_use_it() -> None:
    message = {"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
    with pytest.raises(ValueError, match="upload"):
        to_history([message])
    seen = []

    def upload(url: str) -> dict:
        seen.append(url)
        return {"type": "file", "name": "i", "identifier": "f1", "sizeBytes": 3,
                "fileType": "image"}

    parts = to_history([message], upload)["messages"][0]["content"]
    assert seen == ["data:image/png;base64,AAAA"] and parts[1]["identifier"] == "f1"


def test_unknown_role_is_rejected() -> None:
    with pytest.raises(ValueError, match="Invalid role"):
        to_history([{"role": "robot", "content": "x"}])


def test_split_system() -> None:
    system, rest = split_system([{"role": "system", "content": "S"},
                                 {"role": "user", "content": "U"}])
    assert system == "S" and rest == [{"role": "user", "content": "U"}]
    assert split_system([{"role": "user", "content": "U"}])[0] is None


def test_raw_tools() -> None:
    setting = raw_tools([{"type": "function", "function": {"name": "t", "parameters": None}}],
                        force=True)
    assert setting == {"type": "toolArray", "force": True, "tools": [{
        "type": "function",
        "function": {"name": "t", "parameters": {"type": "object", "properties": {}}}}]}
    with pytest.raises(ValueError, match="'type'"):
        raw_tools([{"function": {"name": "t"}}])


def test_completion_message_carries_openai_tool_calls() -> None:
    reply = Reply(content="", tool_calls=[openai_tool_call(None, "echo", {"text": "hi"})])
    message = completion_message(reply)
    call = message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "echo" and json.loads(call.function.arguments) == {"text": "hi"}
    assert completion_message(Reply(content="plain")).tool_calls is None


def test_config_snippet_is_valid_toml() -> None:
    parsed = tomllib.loads(config_snippet("qwen2.5-7b-instruct", host="gpu:1234"))
    assert parsed["llm"]["model"] == "qwen2.5-7b-instruct"
    assert parsed["llm"]["base_url"] == "http://gpu:1234/v1"
    assert parsed["llm"]["max_tokens"] == 2048 and parsed["llm"]["temperature"] == 0.0


def test_config_snippet_does_not_import_openmanus() -> None:
    code = ("import sys; from producers.openmanus import config_snippet; "
            "config_snippet('m'); print('app' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "False"


def test_llm_values_follow_openmanus_sections() -> None:
    table = {"default": SimpleNamespace(model="m", max_tokens=100, temperature=0.0),
             "manus": SimpleNamespace(model="big", max_tokens=None, temperature=None)}
    assert openmanus_llm_values("default", table).model == "m"
    assert openmanus_llm_values("default", table).temperature == 0.0
    manus = openmanus_llm_values("manus", table)
    assert (manus.model, manus.max_tokens, manus.temperature) == ("big", 4096, 1.0)
    assert openmanus_llm_values("other", table).max_tokens == 100


def test_job_safe_messages() -> None:
    from producers.openmanus._messages import job_safe_messages

    bad = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}
    safe = job_safe_messages([{"role": "user", "content": "x"}, bad])
    call = safe[1]["tool_calls"][0]
    assert call["type"] == "function"
    assert json.loads(call["function"]["arguments"]) == {"_raw_arguments": "{oops"}
    assert bad["tool_calls"][0]["function"]["arguments"] == "{oops"  # input untouched
    with pytest.raises(ValueError, match="images"):
        job_safe_messages([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:,"}}]}])
