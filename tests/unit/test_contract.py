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
    with pytest.raises(ValidationError):
        PredictionConfig(temperature=-1)


def test_errors_rebuild_from_args() -> None:
    for exc in (ContextOverflowError("too long"), JobCancelledError("stop", {"content": "x"})):
        rebuilt = type(exc)(*exc.args)
        assert rebuilt.args == exc.args and str(rebuilt) == str(exc)
    assert JobCancelledError("stop", {"content": "x"}).partial == {"content": "x"}
