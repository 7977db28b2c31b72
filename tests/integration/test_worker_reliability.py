"""Delivery and failure handling with real worker processes, Redis and the simulator."""

from __future__ import annotations

import time

import pytest
import redis
from celery.result import AsyncResult

from tests.integration.test_worker_support import (
    EMBED,
    LLM,
    client_app,
    fragment_entries,
    predict_channels,
    rpc_calls,
    send,
    unacked,
)
from tests.support.services import ping_worker
from tests.support.wait import wait_until
from workers.contract import (
    ChatJob,
    ChatResult,
    CompletionJob,
    EmbeddingJob,
    EmbeddingResult,
)
from workers.error import ContextOverflowError, InvalidJobError, LMStudioUnavailableError
from workers.lifecycle import EXIT_CONFIG

pytestmark = [pytest.mark.timeout(240)]


def _finished_channels(sim) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    return [c for c in predict_channels(sim)
            if c["stop_reason"] in ("eosFound", "maxPredictedTokensReached")]


def test_worker_killed_mid_job_is_redelivered_and_completes_once(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    env = {**lmq_env, "LMQ_VISIBILITY_TIMEOUT_S": "3"}
    first = worker_factory(LLM, env)
    simulator.admin.set_timing(decode_tokens_per_s=30)
    simulator.admin.set_faults(reply_tokens=60)
    app = client_app(redis_url)
    handle = send(app, ChatJob(model=LLM, messages="survive a crash"))
    wait_until(lambda: any(c["fragments"] >= 3 for c in predict_channels(simulator)),
               timeout=30, message="job generating on the first worker")
    first.kill()
    assert unacked(redis_url) == 1  # the job is not lost: still unacknowledged
    # Redelivery: a starting worker restores unacked messages older than the visibility
    # timeout (kombu's restore_visible at poll init; later sweeps run only every ~100 s).
    delivered_at = min(score for _, score in redis.Redis.from_url(redis_url).zrange(
        "unacked_index", 0, -1, withscores=True))
    wait_until(lambda: time.time() - delivered_at > 3.2, timeout=10,
               message="message older than the visibility timeout")
    second = worker_factory(LLM, env)
    result = ChatResult.model_validate(handle.get(timeout=90))
    assert result.worker == second.hostname and result.attempt == 2
    assert len(_finished_channels(simulator)) == 1  # completed exactly once
    wait_until(lambda: unacked(redis_url) == 0, timeout=30, message="acked")
    assert AsyncResult(handle.id, app=app).state == "SUCCESS"


def test_dropped_connection_mid_job_reconnects_and_completes(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker = worker_factory(LLM, {**lmq_env, "LMQ_JOB_RETRY_BACKOFF_S": "0.2"})
    simulator.admin.set_faults(drop_after_fragments=5, drop_times=1, reply_tokens=30)
    app = client_app(redis_url)
    handle = send(app, ChatJob(model=LLM, messages="keep going"))
    result = ChatResult.model_validate(handle.get(timeout=60))
    assert result.stats.predicted_tokens_count == 30 and result.attempt == 1
    assert len(predict_channels(simulator)) == 2  # the dropped one, then the retry
    entries = fragment_entries(redis_url, handle.id)
    assert {"reset": "1"} in entries and entries[-1] == {"end": "SUCCESS"}
    after_reset = entries[entries.index({"reset": "1"}) + 1:]
    assert "".join(e.get("t", "") for e in after_reset) == result.content
    assert "reconnected to LM Studio" in worker.log_tail(200)
    # The worker keeps serving on the reconnected socket.
    again = send(app, CompletionJob(model=LLM, prompt="and again", config={"max_tokens": 5}))
    assert again.get(timeout=30)["stats"]["predicted_tokens_count"] == 5


def test_embedding_job_outlives_lm_studio_restarting_mid_job(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    """The texts run on the SDK loop; those left when the socket dropped go through the
    calls that reconnect and retry: every text embedded once in the result, in order."""
    env = {**lmq_env, "LMQ_JOB_RETRY_BACKOFF_S": "0.3", "LMQ_JOB_MAX_RETRIES": "4"}
    worker = worker_factory(EMBED, env)
    simulator.admin.set_faults(delay_s=0.05, delay_endpoints=["embedString"])
    texts = [f"passage {i} about queues and workers" for i in range(60)]
    app = client_app(redis_url)
    handle = send(app, EmbeddingJob(model=EMBED, texts=texts))
    wait_until(lambda: len(rpc_calls(simulator, "embedString")) >= 10, timeout=60,
               message="some texts embedded before the restart")
    simulator.admin.restart(down_s=0.5)  # closes every socket mid-job
    result = EmbeddingResult.model_validate(handle.get(timeout=120))
    assert result.completed == 60 and not result.cancelled
    assert "reconnected to LM Studio" in worker.log_tail(300)
    again = EmbeddingResult.model_validate(
        send(app, EmbeddingJob(model=EMBED, texts=texts)).get(timeout=60))
    assert result.vectors == again.vectors  # each text's own vector, in its place


def test_retries_are_bounded_then_the_job_fails_unavailable(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    env = {**lmq_env, "LMQ_JOB_MAX_RETRIES": "1", "LMQ_JOB_RETRY_BACKOFF_S": "0.1"}
    worker_factory(LLM, env)
    simulator.admin.set_faults(drop_after_fragments=2, reply_tokens=30)  # drops every time
    app = client_app(redis_url)
    handle = send(app, ChatJob(model=LLM, messages="doomed"))
    wait_until(lambda: AsyncResult(handle.id, app=app).state == "FAILURE", timeout=60,
               message="FAILURE")
    exc = AsyncResult(handle.id, app=app).result
    assert isinstance(exc, LMStudioUnavailableError) and "after 1 retries" in str(exc)
    assert len(predict_channels(simulator)) == 2  # the first try and one retry
    assert fragment_entries(redis_url, handle.id)[-1] == {"end": "FAILURE"}


def test_lm_studio_down_at_start_worker_waits_then_serves(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    simulator.stop()
    env = {**lmq_env, "LMQ_CONNECT_BACKOFF_MAX_S": "0.5"}
    worker = worker_factory(LLM, env, wait_ready=False)
    wait_until(lambda: "LM Studio is not reachable" in worker.log_tail(200), timeout=60,
               message=lambda: f"the unreachable line; log:\n{worker.log_tail()}")
    app = client_app(redis_url)
    handle = send(app, CompletionJob(model=LLM, prompt="waiting", config={"max_tokens": 3}))
    assert worker.is_running() and not ping_worker(redis_url, worker.hostname, 0.5)
    assert handle.state == "PENDING"  # not consumed while LM Studio is down
    simulator.start()
    assert handle.get(timeout=60)["stats"]["predicted_tokens_count"] == 3
    assert worker.log_tail(400).count("retrying with backoff") == 1  # one line, no spam


def test_sigterm_stops_a_worker_waiting_for_lm_studio(worker_factory, lmq_env, simulator):  # type: ignore[no-untyped-def]
    simulator.stop()
    worker = worker_factory(LLM, lmq_env, wait_ready=False)
    wait_until(lambda: "LM Studio is not reachable" in worker.log_tail(200), timeout=60,
               message="the unreachable line")
    assert worker.stop(timeout_s=20) == 0


def test_worker_without_model_exits_with_a_clear_message(worker_factory, lmq_env):  # type: ignore[no-untyped-def]
    worker = worker_factory("", lmq_env, wait_ready=False)
    wait_until(lambda: not worker.is_running(), timeout=60, message="worker exit")
    assert worker.process is not None and worker.process.returncode == EXIT_CONFIG
    assert "LMQ_MODEL is not set" in worker.log_tail(100)


def test_model_not_downloaded_exits_naming_available_models(worker_factory, lmq_env):  # type: ignore[no-untyped-def]
    worker = worker_factory("no-such-model", lmq_env, wait_ready=False)
    wait_until(lambda: not worker.is_running(), timeout=60, message="worker exit")
    assert worker.process is not None and worker.process.returncode == EXIT_CONFIG
    log = worker.log_tail(200)
    assert "'no-such-model' is not downloaded" in log
    assert LLM in log and "text-embedding-nomic-embed-text-v1.5" in log


@pytest.mark.parametrize("job, error, words", [
    ({"kind": "chat", "model": LLM}, InvalidJobError, "messages"),
    ({"kind": "chat", "model": LLM, "messages": "hi", "tools": [{"type": "retrieval"}]},
     InvalidJobError, "tools"),
    ({"kind": "chat", "model": LLM, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "1", "type": "function",
                                              "function": {"name": "f", "arguments": "{"}}]}]},
     InvalidJobError, "not valid JSON"),
    ({"kind": "chat", "model": LLM, "messages": "hi", "config": {"max_tokens": 5000}},
     ContextOverflowError, "context length of 4096"),
    # a config the SDK's schema refuses, sent past the producer's check (raw send_task)
    ({"kind": "completion", "model": LLM, "prompt": "x", "config": {"temperature": -1}},
     InvalidJobError, "temperature"),
    ({"kind": "chat", "model": LLM, "messages": "x", "config": {"topPSamplin": 0.5}},
     InvalidJobError, "unknown prediction config key(s) ['topPSamplin']"),
])
def test_bad_job_fails_at_once_and_is_not_retried(job, error, words, worker_factory, lmq_env,
                                                  redis_url, simulator):  # type: ignore[no-untyped-def]
    worker_factory(LLM, lmq_env)
    app = client_app(redis_url)
    handle = send(app, job)
    wait_until(lambda: AsyncResult(handle.id, app=app).state == "FAILURE", timeout=30,
               message="FAILURE")
    exc = AsyncResult(handle.id, app=app).result
    assert isinstance(exc, error) and words in str(exc), repr(exc)
    wait_until(lambda: unacked(redis_url) == 0, timeout=30, message="acked")
    assert predict_channels(simulator) == []  # never reached a prediction
    attempts = redis.Redis.from_url(redis_url).get(f"lmq:attempt:{handle.id}")
    assert attempts in (None, b"1")  # ran at most once, never retried


def test_redelivered_finished_job_returns_stored_result(worker_factory, lmq_env, redis_url,
                                                        simulator):  # type: ignore[no-untyped-def]
    worker_factory(LLM, lmq_env)
    app = client_app(redis_url)
    job = ChatJob(model=LLM, messages="only once", config={"max_tokens": 6})
    first = ChatResult.model_validate(send(app, job).get(timeout=30))
    again = send(app, job, task_id=first.job_id)  # the same job delivered a second time
    wait_until(lambda: AsyncResult(again.id, app=app).state == "SUCCESS"
               and unacked(redis_url) == 0,
               timeout=30, message="second delivery done")
    wait_until(lambda: AsyncResult(again.id, app=app).result == first.model_dump(mode="json"),
               timeout=30, message="stored result kept")
    assert len(predict_channels(simulator)) == 1


def test_shutdown_closes_the_client_and_unloads_when_asked(worker_factory, lmq_env, simulator):  # type: ignore[no-untyped-def]
    worker = worker_factory(LLM, {**lmq_env, "LMQ_UNLOAD_ON_SHUTDOWN": "true"})
    assert worker.stop(timeout_s=30) == 0
    assert [c["msg"]["parameter"] for c in rpc_calls(simulator, "unloadModel")] == [
        {"identifier": LLM}]
    assert "closed the LM Studio session" in worker.log_tail(50)
