"""`producers.sdk`'s pure parts: SDK config -> job config, callback order, SDK result types
built from pool results, and the SDK-shaped errors (no network here; the end-to-end runs
are tests/integration/test_sdk_client.py)."""

from __future__ import annotations

from typing import Any

import lmstudio
import pydantic
import pytest

from producers.sdk import _config, _errors, _result
from producers.sdk._callbacks import Callbacks
from workers.contract import ChatResult
from workers.error import (
    ContextOverflowError,
    InvalidJobError,
    JobFailedError,
    JobTimeoutError,
    ModelNotServedError,
)


def sdk_config(config: Any, response_format: Any = None) -> lmstudio.LlmPredictionConfig:
    return _config.sdk_config(_config.job_config(config, response_format))


def test_the_sdks_config_in_camel_or_snake_case_or_as_an_object() -> None:
    expected = lmstudio.LlmPredictionConfig(temperature=0.6, max_tokens=50, top_p_sampling=0.9,
                                            stop_strings=["\n"])
    assert sdk_config({"temperature": 0.6, "maxTokens": 50, "topPSampling": 0.9,
                       "stopStrings": ["\n"]}) == expected
    assert sdk_config({"temperature": 0.6, "max_tokens": 50, "top_p_sampling": 0.9,
                       "stop_strings": ["\n"]}) == expected
    assert sdk_config(expected) == expected
    assert _config.job_config(expected).sdk_dict() == expected.to_dict()  # what the job sends


class Book(pydantic.BaseModel):
    title: str
    year: int


def test_response_format_becomes_the_structured_setting() -> None:
    config = sdk_config({"maxTokens": 10}, Book)
    assert config.structured is not None and config.structured.type == "json"
    assert config.structured.json_schema["required"] == ["title", "year"]
    with pytest.raises(lmstudio.LMStudioValueError, match="both"):
        _config.job_config({"structured": {"type": "json", "jsonSchema": {}}}, Book)


def test_a_wrong_key_or_value_is_named_before_anything_is_sent() -> None:
    with pytest.raises(InvalidJobError, match="'maxTokenz'.*maxTokens") as typo:
        _config.job_config({"maxTokenz": 5})
    assert isinstance(typo.value, lmstudio.LMStudioValueError)
    with pytest.raises(lmstudio.LMStudioValueError, match="temperature"):
        _config.job_config({"temperature": "hot"})
    with pytest.raises(lmstudio.LMStudioValueError, match="LlmPredictionConfig"):
        _config.job_config(["maxTokens", 5])


def fragment(text: str) -> lmstudio.LlmPredictionFragment:
    return _result.fragment(text)


def recording() -> tuple[Callbacks, list[str]]:
    events: list[str] = []
    callbacks = Callbacks(
        on_message=lambda m: events.append(f"message {m.content[0].text}"),
        on_first_token=lambda: events.append("first token"),
        on_prediction_fragment=lambda f: events.append(f"fragment {f.content}"),
        on_prompt_processing_progress=lambda p: events.append(f"progress {p:g}"))
    return callbacks, events


def test_callbacks_follow_the_sdks_order() -> None:
    callbacks, events = recording()
    callbacks.progress(0.4)
    callbacks.progress(0.2)  # never backwards
    callbacks.fragment(fragment("Hel"))
    callbacks.progress(0.9)  # prompt processing is over once a fragment arrived
    callbacks.fragment(fragment("lo"))
    callbacks.message(_result.prediction_result(chat_result("Hello"),
                                                lmstudio.LlmPredictionConfig()))
    assert events == ["progress 0", "progress 0.4", "progress 1", "first token",
                      "fragment Hel", "fragment lo", "message Hello"]


def test_after_cancel_progress_and_fragments_are_dropped_but_a_failing_callback_is_not_fatal(
        caplog: pytest.LogCaptureFixture) -> None:
    callbacks, events = recording()
    callbacks.on_first_token = lambda: 1 / 0
    callbacks.fragment(fragment("a"))
    assert events == ["progress 0", "progress 1", "fragment a"]
    assert "callback" in caplog.text and "ZeroDivisionError" in caplog.text
    callbacks.cancelled = True
    callbacks.progress(1.5)
    assert events == ["progress 0", "progress 1", "fragment a"]


def chat_result(content: str, parsed: Any = None, **stats: Any) -> ChatResult:
    return ChatResult.model_validate({
        "job_id": "j", "worker": "w", "content": content, "parsed": parsed,
        "model": {"model_key": "m", "format": "gguf", "context_length": 4096},
        "timing": {"started_at": 1.0, "finished_at": 2.0, "run_s": 1.0},
        "stats": {"stop_reason": "eosFound", "time_to_first_token_s": 0.25, **stats}})


def test_pool_results_become_the_sdks_prediction_result() -> None:
    config = lmstudio.LlmPredictionConfig(max_tokens=20)
    result = _result.prediction_result(chat_result("Hi", predicted_tokens_count=2), config)
    assert type(result) is lmstudio.PredictionResult and result.content == "Hi"
    assert result.parsed is result.content and not result.structured
    assert result.stats == lmstudio.LlmPredictionStats(
        stop_reason="eosFound", time_to_first_token_sec=0.25, predicted_tokens_count=2)
    assert result.model_info.model_key == "m" and result.model_info.max_context_length == 4096
    assert result.load_config.context_length == 4096 and result.prediction_config is config


def test_structured_results_are_parsed_and_a_job_cancelled_before_it_ran_is_empty() -> None:
    config = sdk_config(None, Book)
    text = '{"title": "Dune", "year": 1965}'
    assert _result.prediction_result(chat_result(text), config).parsed == {"title": "Dune",
                                                                             "year": 1965}
    assert _result.prediction_result(chat_result("not json"), config).structured is False
    empty = _result.cancelled_result("m", None, config)
    assert empty.content == "" and empty.stats.stop_reason == "userStopped"


@pytest.mark.parametrize(("pool_error", "sdk_class"), [
    (ModelNotServedError("no worker"), lmstudio.LMStudioModelNotFoundError),
    (InvalidJobError("bad job"), lmstudio.LMStudioValueError),
    (ContextOverflowError("too long"), lmstudio.LMStudioPredictionError),
    (JobFailedError("failed"), lmstudio.LMStudioPredictionError),
    (JobTimeoutError("late"), lmstudio.LMStudioTimeoutError),
])
def test_pool_errors_are_raised_as_the_sdks_classes_and_stay_pool_errors(
        pool_error: Exception, sdk_class: type[Exception]) -> None:
    with pytest.raises(sdk_class) as caught, _errors.translated():
        raise pool_error
    assert isinstance(caught.value, type(pool_error)) and str(caught.value) == str(pool_error)
    assert caught.value.__cause__ is pool_error
    assert type(caught.value)(*caught.value.args).args == caught.value.args


def test_a_dropped_redis_names_the_setting() -> None:
    import redis

    with pytest.raises(lmstudio.LMStudioWebsocketError, match="LMQ_BROKER_URL"), \
            _errors.translated():
        raise redis.ConnectionError("refused")


def test_a_broker_url_or_an_lm_studio_host_as_the_target() -> None:
    from producers.sdk._target import settings_for
    from workers.settings import Settings

    url = "redis://127.0.0.1:6390/4"
    chosen = settings_for(url)
    assert chosen.broker_url == chosen.backend_url == url
    # A script's LM Studio host is the workers' business: the client keeps LMQ_* settings.
    assert settings_for("localhost:1234").broker_url == Settings().broker_url
    given = Settings(broker_url=url)
    assert settings_for(given) is given


def test_the_sdks_types_resolve_and_its_direct_calls_say_where_to_make_them() -> None:
    from producers import sdk

    assert sdk.Chat is lmstudio.Chat and sdk.PredictionResult is lmstudio.PredictionResult
    assert sdk.LlmLoadModelConfigDict is lmstudio.LlmLoadModelConfigDict  # not re-exported
    with pytest.raises(AttributeError, match="call lmstudio.prepare_image against that host"):
        sdk.prepare_image  # noqa: B018
    with pytest.raises(AttributeError, match="tokenize.*not available over the pool"):
        sdk.LLM(None, "m").tokenize  # type: ignore[arg-type]  # noqa: B018
