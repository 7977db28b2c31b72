"""Job config is the SDK's prediction config: checked with the SDK's schema at submit, shown
as sent (only secrets masked). No network."""

from __future__ import annotations

import re

import lmstudio as lms
import pydantic
import pytest

from producers.job_building import coerce_job, make_config, make_job
from producers.prediction_config import allowed_keys
from workers.contract import ChatJob
from workers.error import InvalidJobError
from workers.lmstudio.prediction_config import checked_sdk_config
from workers.task_display import argsrepr, config_summary, is_secret_key

# One value for every key of lmstudio.LlmPredictionConfig the SDK can send (not `raw`,
# see test_raw_is_refused_at_submit), in the SDK's camelCase.
EVERY_KEY = {
    "maxTokens": 50, "temperature": 0.6, "stopStrings": ["END"],
    "toolCallStopStrings": ["</tool_call>"], "contextOverflowPolicy": "stopAtLimit",
    "structured": {"type": "json", "jsonSchema": {"type": "object"}},
    "rawTools": {"type": "none"}, "topKSampling": 40, "repeatPenalty": 1.1,
    "minPSampling": 0.05, "topPSampling": 0.9, "cpuThreads": 4,
    "promptTemplate": {"type": "jinja", "stopStrings": ["<|end|>"],
                       "jinjaPromptTemplate": {"template": "{{ messages }}"}},
    "draftModel": "llama-3.2-1b-instruct", "speculativeDecodingNumDraftTokensExact": 3,
    "speculativeDecodingMinDraftLengthToConsider": 1,
    "speculativeDecodingMinContinueDraftingProbability": 0.5,
    "reasoningParsing": {"enabled": True, "startString": "<think>", "endString": "</think>"},
}


def snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def test_every_sdk_key_is_accepted_as_given_in_camel_and_snake_case() -> None:
    assert set(EVERY_KEY) == set(allowed_keys()) - {"raw"}
    assert make_config(EVERY_KEY).sdk_dict() == EVERY_KEY
    snake_keys = {snake(key): value for key, value in EVERY_KEY.items()}
    snake_keys["reasoning_parsing"] = {"enabled": True, "start_string": "<think>",
                                       "end_string": "</think>"}
    assert make_config(snake_keys).sdk_dict() == EVERY_KEY
    assert make_config(lms.LlmPredictionConfig.from_dict(EVERY_KEY)).sdk_dict() == EVERY_KEY


def test_todays_short_names_stay_aliases() -> None:
    config = make_config({"max_tokens": 7, "top_p": 0.5, "top_k": 3, "stop": ["x"], "seed": 4,
                          "json_schema": {"type": "object"}, "temperature": 0.1})
    assert config.sdk_dict() == {
        "maxTokens": 7, "topPSampling": 0.5, "topKSampling": 3, "stopStrings": ["x"],
        "structured": {"type": "json", "jsonSchema": {"type": "object"}}, "temperature": 0.1}
    assert config.seed == 4


@pytest.mark.parametrize(("config", "message"), [
    ({"maxTokenz": 5}, "unknown prediction config key 'maxTokenz': did you mean 'maxTokens'"),
    ({"frequency_penalty": 1}, "allowed are the SDK's LlmPredictionConfig keys (maxTokens"),
    ({"temperature": -1}, "temperature: expected `float` >= 0.0 (got -1)"),
    ({"temperature": "hot"}, "temperature: expected `float | null`, got `str`"),
    ({"maxTokens": "50"}, "maxTokens: expected `bool | int | null`, got `str`"),
    ({"topPSampling": "high"}, "topPSampling: expected `bool | float | null`, got `str`"),
    ({"stopStrings": "END"}, "stopStrings: expected `array | null`, got `str`"),
    ({"contextOverflowPolicy": "drop"}, "allowed: 'stopAtLimit', 'truncateMiddle', "
                                        "'rollingWindow'"),
    ({"reasoningParsing": {"enabled": True, "startString": "<", "endString": ">", "x": 1}},
     "unknown key 'reasoningParsing.x'; allowed there: enabled, startString, endString"),
    ({"promptTemplate": {"type": "jinja"}}, "promptTemplate: object missing required field "
                                            "`stopStrings`"),
    ({"max_tokens": 5, "maxTokens": 6}, "maxTokens is given twice"),
    ({"seed": "x"}, "seed: Input should be a valid integer"),
])
def test_a_bad_key_or_value_is_named_with_what_is_allowed(config: dict[str, object],
                                                          message: str) -> None:
    with pytest.raises(InvalidJobError, match=re.escape(message)):
        make_config(config)


def test_wrong_types_are_refused() -> None:
    with pytest.raises(InvalidJobError, match="not list"):
        make_config(["maxTokens", 5])  # type: ignore[arg-type]
    with pytest.raises(InvalidJobError, match="invalid response_format"):
        make_config({}, response_format=42)


def test_raw_is_refused_at_submit() -> None:
    # LlmPredictionConfig has `raw`, but SDK 1.5.0's respond() cannot send it: fail now.
    with pytest.raises(InvalidJobError, match=r"Unknown config settings: \['raw'\].*leave"):
        make_config({"raw": {"fields": [{"key": "llm.prediction.temperature", "value": 1}]}})


def test_response_format_is_what_respond_sends() -> None:
    class Book(pydantic.BaseModel):
        title: str

    config = make_config({"maxTokens": 20}, response_format=Book)
    assert config.sdk_dict()["structured"] == {"type": "json",
                                               "jsonSchema": Book.model_json_schema()}
    assert make_config(None, {"type": "object"}).json_schema == {"type": "object"}
    with pytest.raises(InvalidJobError, match="Cannot specify both"):
        make_config({"structured": {"type": "json", "jsonSchema": {}}}, response_format=Book)


def test_jobs_built_any_way_meet_the_sdk_schema() -> None:
    with pytest.raises(InvalidJobError, match="temperature"):
        make_job("chat", {"model": "m", "messages": "hi", "config": {"temperature": -2}})
    with pytest.raises(InvalidJobError, match="unknown prediction config key 'bogus'"):
        coerce_job(ChatJob(model="m", messages="hi", config={"bogus": 1}))
    job = coerce_job({"kind": "completion", "model": "m", "prompt": "p",
                      "config": {"top_k": 3}})
    assert job.config.sdk_dict() == {"topKSampling": 3}


def test_the_worker_checks_again_at_its_lm_studio_boundary() -> None:
    assert checked_sdk_config({"maxTokens": 5, "topPSampling": 0.5}) == {"maxTokens": 5,
                                                                         "topPSampling": 0.5}
    with pytest.raises(InvalidJobError, match="unknown prediction config key"):
        checked_sdk_config({"bogus": 1})
    with pytest.raises(InvalidJobError, match="temperature"):
        checked_sdk_config({"temperature": "hot"})


def test_flower_shows_the_config_as_sent_and_masks_only_secrets() -> None:
    job = ChatJob(model="m", messages="hi", config={
        "max_tokens": 64, "temperature": 0.6, "speculativeDecodingNumDraftTokensExact": 2,
        "api_key": "sk-abcdefghijkl"}).model_dump(mode="json")
    shown = argsrepr(job)
    assert "config(maxTokens=64, temperature=0.6, speculativeDecodingNumDraftTokensExact=2, " \
           "apiKey=***)" in shown
    assert "sk-abc" not in shown
    assert config_summary({"structured": {"type": "json", "jsonSchema": {"type": "object"}}}) \
        == 'config(structured={"type":"json","jsonSchema":{"type":"object"}})'
    for key in ("maxTokens", "max_tokens", "tokens_so_far", "topKSampling", "sort_key"):
        assert not is_secret_key(key), key
    for key in ("api_key", "apiKey", "accessToken", "token", "password", "client_secret"):
        assert is_secret_key(key), key


def test_a_job_from_a_producer_of_before_still_runs() -> None:
    # the config a producer sent before this change: every short name, unset ones as null
    old = {"temperature": 0.5, "max_tokens": 5, "top_p": None, "top_k": None, "stop": [],
           "seed": None, "json_schema": {"type": "object"}}
    job = ChatJob.model_validate({"model": "m", "messages": "hi", "config": old})
    assert checked_sdk_config(job.config.sdk_dict()) == {
        "temperature": 0.5, "maxTokens": 5, "stopStrings": [],
        "structured": {"type": "json", "jsonSchema": {"type": "object"}}}
