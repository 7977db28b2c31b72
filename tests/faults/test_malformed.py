"""Malformed inputs at the Python API, the CLI and raw messages put on the queue by hand.

Clear errors, workers never crash, nothing else stalls: a good job sent after the garbage
completes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.publisher import task_message
from tests.faults.support import LLM, job_queue
from workers.contract import ChatJob
from workers.error import LmqError

pytestmark = [pytest.mark.timeout(300)]
LMQ = str(Path(sys.executable).parent / "lmq")
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3), max_leaves=8)


@settings(max_examples=80, deadline=None, suppress_health_check=FIXTURES)
@given(model=st.one_of(st.text(max_size=30), json_values), prompt=json_values,
       config=st.one_of(st.none(), st.dictionaries(
           st.sampled_from(["max_tokens", "temperature", "top_p", "stop", "seed", "bogus"]),
           json_values, max_size=3)))
def test_python_api_raises_clear_errors(redis_url, model, prompt, config):  # type: ignore[no-untyped-def]
    with job_queue(redis_url) as queue:
        try:
            handle = queue.chat(model, prompt, config=config, enqueue_anyway=True)
        except LmqError as exc:  # InvalidJobError and friends: a readable message
            assert str(exc) and "Traceback" not in str(exc)
        else:
            assert queue.job_record(handle.id) is not None  # valid: really enqueued


@pytest.mark.parametrize("args, words", [
    (["chat", LLM, "hi", "--temperature", "hot"], "temperature"),
    (["chat", LLM, "hi", "--max-tokens", "-5"], "max"),
    (["chat", LLM, "hi", "--json-schema", "{not json"], "json"),
    (["complete", LLM, "x" * 50, "--top-p", "7", "--enqueue-anyway", "--no-wait"], "top"),
    (["embed", LLM], ""),
    (["result", "no-such-job", "--timeout", "0.5"], ""),
])
def test_cli_rejects_bad_input_in_one_line(redis_url, args, words):  # type: ignore[no-untyped-def]
    env = {**os.environ, "LMQ_BROKER_URL": redis_url, "LMQ_RESULT_BACKEND": redis_url}
    proc = subprocess.run([LMQ, *args], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert words.lower() in proc.stderr.lower(), proc.stderr


def garbage_envelopes() -> st.SearchStrategy[str]:
    good = json.loads(task_message(_app(), str(uuid.uuid4()),
                                   ChatJob(model=LLM, messages="template")))
    bodies = st.one_of(st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
                       json_values.map(lambda v: base64.b64encode(
                           json.dumps(v).encode()).decode()),
                       st.text(max_size=30))
    headers = st.one_of(json_values, st.just(good["headers"]), st.fixed_dictionaries(
        {"task": st.sampled_from(["lmq.chat", "lmq.nope", ""]), "id": st.text(max_size=10)}))
    return st.builds(lambda b, h, ct: json.dumps({**good, "body": b, "headers": h,
                                                  "content-type": ct}),
                     bodies, headers, st.sampled_from(["application/json", "text/garbage"]))


def _app():  # type: ignore[no-untyped-def]
    from producers.celery_app import producer_app
    from workers.settings import Settings

    return producer_app(Settings())


@pytest.mark.slow
def test_raw_garbage_messages_do_not_stall_the_worker(worker_factory, lmq_env, redis_url,
                                                      simulator):  # type: ignore[no-untyped-def]
    worker = worker_factory(LLM, lmq_env)
    client = redis.Redis.from_url(redis_url)
    queue = job_queue(redis_url)

    @settings(max_examples=6, deadline=None, suppress_health_check=FIXTURES)
    @given(st.lists(garbage_envelopes(), min_size=3, max_size=8))
    def push_then_good_job(messages: list[str]) -> None:
        for message in messages:
            client.lpush(f"lmq.{LLM}", message)
        good = queue.chat(LLM, "after the garbage", config={"max_tokens": 3},
                          enqueue_anyway=True)
        assert good.result(timeout=60).stats.predicted_tokens_count == 3
        assert worker.is_running(), worker.log_tail()

    try:
        push_then_good_job()
    finally:
        queue.close()
        client.close()


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "workers bug: a queue entry that is not JSON (e.g. LPUSH lmq.<model> '') kills the worker: "
    "kombu's redis _brpop_read raises JSONDecodeError in the consumer loop, Celery logs "
    "'Unrecoverable error: JSONDecodeError' and the worker process exits; every later job "
    "stalls until a worker is restarted (and the next one dies the same way if the entry "
    "was restored)"))
def test_non_json_queue_entry_does_not_kill_the_worker(worker_factory, lmq_env, redis_url,
                                                       simulator):  # type: ignore[no-untyped-def]
    worker = worker_factory(LLM, lmq_env)
    redis.Redis.from_url(redis_url).lpush(f"lmq.{LLM}", "not json at all")
    with job_queue(redis_url) as queue:
        good = queue.chat(LLM, "after it", config={"max_tokens": 3}, enqueue_anyway=True)
        try:
            assert good.result(timeout=20).stats.predicted_tokens_count == 3
        finally:
            assert worker.is_running(), worker.log_tail(5)
