import pytest
from pydantic import ValidationError

from workers.contract import ChatJob, EmbeddingJob, PredictionConfig, queue_name
from workers.error import ContextOverflowError, JobCancelledError


def test_queue_name_is_prefixed_model_key() -> None:
    assert queue_name("llama-3.2-1b-instruct") == "lmq.llama-3.2-1b-instruct"


def test_chat_job_accepts_string_messages_and_history() -> None:
    assert ChatJob(model="m", messages="hi").messages == "hi"
    job = ChatJob(model="m", messages={"messages": [{"role": "user", "content": "hi"}]})
    assert isinstance(job.messages, dict)


def test_bad_jobs_are_rejected_with_reasons() -> None:
    with pytest.raises(ValidationError, match="not a model key"):
        ChatJob(model="bad model!", messages="hi")
    with pytest.raises(ValidationError, match="empty"):
        EmbeddingJob(model="m", texts=["ok", "  "])
    with pytest.raises(ValidationError, match="maxTokens is given twice"):
        PredictionConfig(max_tokens=1, maxTokens=2)
    with pytest.raises(ValidationError, match="seed"):
        PredictionConfig(seed="x")


def test_prediction_config_holds_the_sdk_keys() -> None:
    config = PredictionConfig(max_tokens=5, top_p=0.5, stop=["x"], json_schema={"type": "object"},
                              repeat_penalty=1.1, seed=3)
    assert config.sdk_dict() == {"maxTokens": 5, "topPSampling": 0.5, "stopStrings": ["x"],
                                 "structured": {"type": "json", "jsonSchema": {"type": "object"}},
                                 "repeatPenalty": 1.1}
    assert (config.max_tokens, config.stop, config.seed) == (5, ["x"], 3)
    assert config.json_schema == {"type": "object"}
    assert PredictionConfig(maxTokens=False).max_tokens is None  # no limit
    # the job's JSON carries the SDK keys, and reads back the same
    assert PredictionConfig.model_validate(config.model_dump(mode="json")) == config


def test_errors_rebuild_from_args() -> None:
    for exc in (ContextOverflowError("too long"), JobCancelledError("stop", {"content": "x"})):
        rebuilt = type(exc)(*exc.args)
        assert rebuilt.args == exc.args and str(rebuilt) == str(exc)
    assert JobCancelledError("stop", {"content": "x"}).partial == {"content": "x"}
