"""Producer-side job building, message format and outcome mapping (no network)."""

from __future__ import annotations

import base64
import json

import pytest
from celery import states
from celery.exceptions import TaskRevokedError

from producers.celery_app import producer_app
from producers.job_building import CheckedConfigs, check_limits, coerce_job, make_config, make_job
from producers.outcome import as_job_error, payload_of, result_or_raise
from producers.publisher import task_message
from producers.served_models import models_from_queues
from workers.contract import ChatResult
from workers.error import InvalidJobError, JobCancelledError, JobFailedError
from workers.settings import Settings


def test_bad_config_names_the_field() -> None:
    with pytest.raises(InvalidJobError, match=r"temperature: expected `float` >= 0.0"):
        make_config({"temperature": -1})


def test_a_submission_checks_each_distinct_config_once() -> None:
    configs = CheckedConfigs()
    first = coerce_job({"model": "m", "messages": "a", "config": {"max_tokens": 16}}, configs)
    second = coerce_job({"model": "m", "messages": "b", "config": {"max_tokens": 16}}, configs)
    assert second.config is first.config and first.config == make_config({"maxTokens": 16})
    # Told apart by type as well as value: 1.0 and True are not 1
    assert configs.check({"temperature": 1}) is not configs.check({"temperature": 1.0})
    assert "false" in configs.check({"maxTokens": False}).model_dump_json()
    assert "false" not in configs.check({"maxTokens": 0}).model_dump_json()
    assert configs.check({"stopStrings": ["x"]}) is configs.check({"stopStrings": ["x"]})
    # A config the memo cannot key (an SDK object) is checked as before
    from lmstudio import LlmPredictionConfig

    sdk = configs.check(LlmPredictionConfig(max_tokens=5))
    assert sdk == make_config({"maxTokens": 5})
    for _ in range(2):  # a bad config is never kept: each job with it fails
        with pytest.raises(InvalidJobError, match="temperature"):
            configs.check({"temperature": -1})


def test_empty_prompt_and_unknown_kind_are_clear() -> None:
    with pytest.raises(InvalidJobError, match="invalid completion job: prompt"):
        make_job("completion", {"model": "m", "prompt": ""})
    with pytest.raises(InvalidJobError, match="unknown job kind 'draw'"):
        make_job("draw", {"model": "m"})


def test_limits_come_from_settings() -> None:
    job = make_job("embedding", {"model": "m", "texts": ["a", "b", "c"]})
    with pytest.raises(InvalidJobError, match="at most 2 texts, got 3"):
        check_limits(job, Settings(max_embed_texts=2))


def test_task_message_is_what_the_worker_expects() -> None:
    app = producer_app(Settings(broker_url="redis://127.0.0.1:1/0"))
    job = make_job("chat", {"model": "llama", "messages": "hi"})
    message = json.loads(task_message(app, "job-1", job))
    assert message["headers"]["task"] == "lmq.chat"
    assert message["headers"]["id"] == "job-1"
    assert message["properties"]["delivery_info"]["routing_key"] == "lmq.llama"
    args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args[0]["messages"] == "hi" and args[0]["kind"] == "chat" and kwargs == {}


def test_served_models_from_active_queues() -> None:
    replies = {"w2@h": [{"name": "lmq.b"}], "w1@h": [{"name": "lmq.a"}, {"name": "celery"}]}
    assert models_from_queues(replies) == {"a": ["w1@h"], "b": ["w2@h"]}


def test_revoked_before_start_is_a_cancel_without_partial() -> None:
    error = as_job_error("j", states.REVOKED, TaskRevokedError("revoked"))
    assert isinstance(error, JobCancelledError) and error.partial is None
    partial = {"content": "Hel"}
    kept = as_job_error("j", states.REVOKED, JobCancelledError("cancelled", partial))
    assert isinstance(kept, JobCancelledError) and kept.partial == partial


def test_foreign_failure_becomes_job_failed() -> None:
    with pytest.raises(JobFailedError, match="RuntimeError: boom"):
        result_or_raise("j", states.FAILURE, RuntimeError("boom"))
    assert payload_of("j", states.PENDING, None) is None


def test_success_parses_the_contract() -> None:
    data = {"kind": "chat", "job_id": "j", "content": "hi", "worker": "w",
            "model": {"model_key": "m"}, "stats": {"stop_reason": "eosFound"},
            "timing": {"started_at": 1.0, "finished_at": 2.0, "run_s": 1.0}}
    result = result_or_raise("j", states.SUCCESS, data)
    assert isinstance(result, ChatResult) and result.content == "hi"
