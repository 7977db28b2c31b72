"""Cancelling jobs: every kind of revoke reaches LM Studio as a prediction cancel.

For each revoke path we assert with the simulator's message log that the cancel arrived,
how soon after the revoke call, how many tokens were sent after it, and that the job ends
REVOKED (never SUCCESS later) with its partial result readable, acknowledged, not redelivered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from celery.result import AsyncResult

from producers.worker_process import PROJECT_ROOT
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
from tests.support.wait import wait_until
from workers.contract import ChatJob, ChatResult, CompletionJob, EmbeddingJob, EmbeddingResult
from workers.error import JobCancelledError

pytestmark = [pytest.mark.timeout(180)]

CANCEL_LATENCY_LIMIT_S = 2.0  # generous: a shared 2-core machine; the benchmark measures it
TOKENS_AFTER_CANCEL_LIMIT = 5


def _slow_replies(sim: Any, tokens: int = 400, decode_tokens_per_s: float = 25) -> None:
    sim.admin.set_timing(decode_tokens_per_s=decode_tokens_per_s)
    sim.admin.set_faults(reply_tokens=tokens)


def _generating(sim: Any, count: int = 1) -> list[dict[str, Any]]:
    return wait_until(lambda: [c for c in predict_channels(sim) if c["fragments"] >= 3]
                      if len([c for c in predict_channels(sim) if c["fragments"] >= 3]) >= count
                      else None, timeout=30, message=f"{count} predictions generating")


def _revoke(app: Any, job_id: str, how: str, env: dict[str, str]) -> None:
    if how == "control":
        app.control.revoke(job_id)
    elif how == "terminate":
        app.control.revoke(job_id, terminate=True)
    elif how == "asyncresult":
        AsyncResult(job_id, app=app).revoke()
    elif how == "cli":
        subprocess.run([sys.executable, "-m", "celery", "-A", "workers", "control", "revoke",
                        job_id], env={**os.environ, **env}, cwd=PROJECT_ROOT, check=True,
                       capture_output=True, timeout=60)
    else:
        raise ValueError(how)


def _cancelled(app: Any, handle: AsyncResult, redis_url: str) -> JobCancelledError:
    """Wait for REVOKED + acked; the first REVOKED seen must already carry our error."""
    def revoked() -> AsyncResult | None:
        fresh = AsyncResult(handle.id, app=app)  # AsyncResult caches ready states
        return fresh if fresh.state == "REVOKED" else None
    fresh = wait_until(revoked, timeout=30, message=lambda: f"REVOKED (state {handle.state})")
    error = fresh.result
    assert isinstance(error, JobCancelledError), repr(error)
    wait_until(lambda: unacked(redis_url) == 0, timeout=30, message="message acked")
    assert str(error) == f"job {handle.id} was cancelled"
    return error


def _assert_stays_revoked(app: Any, handle: AsyncResult, worker: Any) -> None:
    """Once the worker has no active task, the state must still be REVOKED."""
    def idle() -> bool:
        active = app.control.inspect(destination=[worker.hostname], timeout=1).active() or {}
        return active.get(worker.hostname) == []
    wait_until(idle, timeout=30, message="worker idle")
    assert handle.state == "REVOKED"
    assert fragment_entries(app.conf.broker_url, handle.id)[-1] == {"end": "REVOKED"}


@pytest.mark.parametrize("how", ["control", "terminate", "asyncresult", "cli"])
def test_revoke_cancels_running_prediction(how, worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker = worker_factory(LLM, lmq_env)
    _slow_replies(simulator)
    app = client_app(redis_url)
    handle = send(app, ChatJob(model=LLM, messages="Write a long essay"))
    _generating(simulator)
    revoked_at = time.time()
    _revoke(app, handle.id, how, lmq_env)
    error = _cancelled(app, handle, redis_url)

    channel = predict_channels(simulator)[0]
    assert channel["cancel_t"] is not None, "the cancel never reached LM Studio"
    latency_s = channel["cancel_t"] - revoked_at
    assert latency_s < CANCEL_LATENCY_LIMIT_S + (10 if how == "cli" else 0)
    assert channel["fragments_after_cancel"] <= TOKENS_AFTER_CANCEL_LIMIT
    partial = ChatResult.model_validate(error.partial)
    assert partial.cancelled and partial.stats.stop_reason == "userStopped"
    assert partial.content and partial.stats.predicted_tokens_count
    assert partial.stats.predicted_tokens_count < 400
    _assert_stays_revoked(app, handle, worker)
    assert "NotImplementedError" not in worker.log_tail(400)
    assert len(predict_channels(simulator)) == 1  # not redelivered


def test_a_heard_revoke_wakes_the_watcher_without_waiting_for_its_poll(
        worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    """The watcher's poll is a backstop (here a minute): the revoke command wakes it."""
    worker_factory(LLM, {**lmq_env, "LMQ_CANCEL_POLL_S": "60"})
    _slow_replies(simulator)
    app = client_app(redis_url)
    handle = send(app, ChatJob(model=LLM, messages="Write a long essay"))
    _generating(simulator)
    time.sleep(0.5)  # the watcher asleep in its poll, not still in its first check
    revoked_at = time.time()
    app.control.revoke(handle.id)
    _cancelled(app, handle, redis_url)
    channel = predict_channels(simulator)[0]
    assert channel["cancel_t"] is not None
    assert channel["cancel_t"] - revoked_at < CANCEL_LATENCY_LIMIT_S


def test_revoke_during_prompt_processing(worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker_factory(LLM, lmq_env)
    simulator.admin.set_faults(slow_prefill_s=20)
    app = client_app(redis_url)
    handle = send(app, CompletionJob(model=LLM, prompt="A long prompt to process"))
    wait_until(lambda: predict_channels(simulator), timeout=30, message="predict channel")
    revoked_at = time.time()
    app.control.revoke(handle.id)
    error = _cancelled(app, handle, redis_url)
    channel = predict_channels(simulator)[0]
    assert channel["cancel_t"] is not None and channel["cancel_t"] - revoked_at < 2.0
    assert channel["fragments"] == 0
    assert error.partial is not None and error.partial["content"] == ""
    assert error.partial["stats"]["stop_reason"] == "userStopped"


def test_queued_jobs_revoked_never_reach_lm_studio(worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker_factory(LLM, {**lmq_env, "LMQ_CONCURRENCY": "1"})
    _slow_replies(simulator, tokens=100, decode_tokens_per_s=50)
    app = client_app(redis_url)
    running = send(app, ChatJob(model=LLM, messages="first"))
    _generating(simulator)
    queued = [send(app, ChatJob(model=LLM, messages=f"queued {i}")) for i in range(3)]
    for handle in queued:
        app.control.revoke(handle.id)
    ChatResult.model_validate(running.get(timeout=60))
    wait_until(lambda: all(h.state == "REVOKED" for h in queued), timeout=30,
               message="queued jobs REVOKED")
    wait_until(lambda: unacked(redis_url) == 0, timeout=30, message="all acked")
    assert len(predict_channels(simulator)) == 1
    counted = rpc_calls(simulator, "countTokens") + rpc_calls(simulator, "applyPromptTemplate")
    assert not any("queued" in json.dumps(call["msg"]) for call in counted)  # never counted


def test_running_embedding_job_keeps_finished_items(worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker_factory(EMBED, {**lmq_env, "LMQ_EMBED_CONCURRENCY": "2"})
    simulator.admin.set_faults(delay_s=0.03, delay_endpoints=["embedString"])
    app = client_app(redis_url)
    texts = [f"text {i}" for i in range(400)]
    handle = send(app, EmbeddingJob(model=EMBED, texts=texts))
    wait_until(lambda: len(rpc_calls(simulator, "embedString")) >= 10, timeout=30,
               message="some texts embedded")
    app.control.revoke(handle.id)
    error = _cancelled(app, handle, redis_url)
    partial = EmbeddingResult.model_validate(error.partial)
    assert partial.cancelled and 10 <= partial.completed < len(texts)
    assert len(partial.vectors) == partial.completed == len(partial.token_counts)
    sent = len(rpc_calls(simulator, "embedString"))
    assert partial.completed <= sent <= partial.completed + 2  # stopped between items


def test_terminate_across_several_workers(worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    workers = [worker_factory(LLM, {**lmq_env, "LMQ_CONCURRENCY": "2"}) for _ in range(2)]
    _slow_replies(simulator)
    app = client_app(redis_url)
    # max_tokens: on a unified KV cache a job without it reserves every cell (it may grow
    # to n_ctx), so only jobs that bound their reply run four at once.
    handles = [send(app, ChatJob(model=LLM, messages=f"essay {i}", config={"max_tokens": 400}))
               for i in range(4)]
    _generating(simulator, count=4)
    for handle in handles:
        app.control.revoke(handle.id, terminate=True, signal="SIGKILL")
    for handle in handles:
        _cancelled(app, handle, redis_url)
    assert all(c["cancel_t"] is not None for c in predict_channels(simulator))
    # No stuck thread: both workers serve new jobs at full concurrency.
    simulator.admin.clear_faults()
    again = [send(app, ChatJob(model=LLM, messages=f"short {i}", config={"max_tokens": 4}))
             for i in range(4)]
    results = [ChatResult.model_validate(h.get(timeout=60)) for h in again]
    assert {r.worker for r in results} <= {w.hostname for w in workers}
    for worker in workers:
        assert "NotImplementedError" not in worker.log_tail(400)
        assert "AttributeError" not in worker.log_tail(400)
