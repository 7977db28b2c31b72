"""Chat-history conversion and prediction-config mapping (pure functions, no network)."""

from __future__ import annotations

import lmstudio as lms
import pytest

from workers.contract import ChatJob, PredictionConfig, Tool
from workers.error import InvalidJobError
from workers.jobs.chat_history import build_history, prompt_chars, raw_tools
from workers.jobs.predict_config import sdk_prediction_config, seed_note

ADD = {"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}}}}}


def _job(messages, **kw) -> ChatJob:  # type: ignore[no-untyped-def]
    return ChatJob(model="m", messages=messages, **kw)


def test_string_becomes_one_user_message_with_system_prompt() -> None:
    history = build_history(_job("hi", system_prompt="Be brief."))
    assert history == {"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    lms.Chat.from_history(history)  # the SDK accepts it


def test_openai_tool_round_trip_converts_to_sdk_parts() -> None:
    history = build_history(_job([
        {"role": "system", "content": "s1"}, {"role": "system", "content": "s2"},
        {"role": "user", "content": [{"type": "text", "text": "add "}, {"type": "text",
                                                                       "text": "1+2"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add",
                                                          "arguments": "{\"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
        {"role": "assistant", "content": "3"},
    ]))
    messages = history["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[0]["content"][0]["text"] == "s1\n\ns2"
    assert messages[1]["content"][0]["text"] == "add 1+2"
    assert messages[2]["content"][1] == {"type": "toolCallRequest", "toolCallRequest": {
        "type": "function", "name": "add", "arguments": {"a": 1}, "id": "c1"}}
    assert messages[3]["content"] == [{"type": "toolCallResult", "toolCallId": "c1",
                                       "content": "3"}]
    chat = lms.Chat.from_history(history)
    assert len(chat._get_history()["messages"]) == 5
    assert prompt_chars(history) == len("s1\n\ns2") + len("add 1+2") + 1 + 1


def test_sdk_history_dict_passes_through() -> None:
    wire = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}
    assert build_history(_job(wire, system_prompt="S"))["messages"][0]["role"] == "system"


@pytest.mark.parametrize("messages, words", [
    ([{"role": "assistant", "tool_calls": [{"type": "function",
                                            "function": {"name": "f", "arguments": "{"}}]}],
     "not valid JSON"),
    ([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}],
     "must be a JSON object"),
    ([{"role": "assistant", "tool_calls": [{"type": "code"}]}], "tool_calls entries"),
    ([{"role": "tool", "content": "3"}], "tool_call_id"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
     "an image_url with a data URL"),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {}}]}],
     "images go in user messages"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
      {"role": "assistant", "content": "c"}], "consecutive assistant"),
    ([{"role": "user", "content": "x", "tool_calls": [{}]}], "only assistant"),
])
def test_bad_messages_say_what_to_fix(messages, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidJobError, match=words):
        build_history(_job(messages))


def test_tools_become_raw_tools_and_bad_parameters_fail() -> None:
    assert raw_tools([Tool.model_validate(ADD)]) == {"type": "toolArray", "tools": [
        {"type": "function", "function": {"name": "add", "description": "Add.",
                                          "parameters": ADD["function"]["parameters"]}}]}
    assert raw_tools(None) is None
    bad = Tool.model_validate({"type": "function",
                               "function": {"name": "f", "parameters": {"type": "array"}}})
    with pytest.raises(InvalidJobError, match="JSON Schema object"):
        raw_tools([bad])


def test_prediction_config_keys_exist_in_the_sdk() -> None:
    config = PredictionConfig(temperature=0.1, max_tokens=7, top_p=0.5, top_k=3,
                              stop=["x"], json_schema={"type": "object"}, seed=4)
    sdk = sdk_prediction_config(config, raw_tools([Tool.model_validate(ADD)]))
    assert sdk == {"temperature": 0.1, "maxTokens": 7, "topPSampling": 0.5, "topKSampling": 3,
                   "stopStrings": ["x"], "structured": {"type": "json",
                                                        "jsonSchema": {"type": "object"}},
                   "rawTools": raw_tools([Tool.model_validate(ADD)])}
    parsed = lms.LlmPredictionConfig._from_any_dict(sdk).to_dict()  # nothing dropped
    assert set(parsed) == set(sdk)
    assert sdk_prediction_config(PredictionConfig()) == {}
    assert "load time" in (seed_note(config) or "") and seed_note(PredictionConfig()) is None
