"""Job priorities in the broker (issue 20 item 1): a worker takes the most urgent waiting job
first, and a job that waited past LMQ_PRIORITY_AGING_S counts one level higher.

Real worker processes (one job at a time: LMQ_CONCURRENCY=1), real Redis, the SDK against
the simulator. A slow first job keeps the worker busy while the others queue up behind it;
the order they then start in (their results' `timing.started_at`) is the order the worker
took them off the broker lists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from producers import JobQueue
from producers.job_handle import JobHandle
from tests.integration.corpus_support import lmq
from tests.integration.test_worker_support import LLM, predict_channels
from tests.support.wait import wait_until
from workers.contract import ChatResult, queue_name
from workers.settings import Settings

pytestmark = [pytest.mark.timeout(240)]

FAST = {"maxTokens": 2}


@pytest.fixture()
def queue(redis_url: str) -> Iterator[JobQueue]:
    with JobQueue(Settings(broker_url=redis_url, result_backend=redis_url)) as started:
        yield started


def _busy(simulator, queue: JobQueue, seconds_of_tokens: int) -> JobHandle:  # type: ignore[no-untyped-def]
    """A job generating on the worker's only thread for about `seconds_of_tokens` s."""
    simulator.admin.set_timing(decode_tokens_per_s=30)
    simulator.admin.set_faults(reply_tokens=30 * seconds_of_tokens)
    blocker = queue.chat(LLM, "keep the worker busy", enqueue_anyway=True)
    wait_until(lambda: any(c["fragments"] >= 2 for c in predict_channels(simulator)),
               timeout=60, message="the first job generating")
    return blocker


def _start_order(handles: dict[str, JobHandle]) -> list[str]:
    results: dict[str, ChatResult] = {name: h.result(timeout=120)
                                      for name, h in handles.items()}
    return sorted(results, key=lambda name: results[name].timing.started_at)


def _waiting(redis_url: str, count: int) -> None:
    client = redis.Redis.from_url(redis_url)
    lists = [key for key in client.keys(queue_name(LLM) + "*") if not key.startswith(b"lmq:")]
    wait_until(lambda: sum(client.llen(key) for key in lists) == count, timeout=10,
               message=f"{count} jobs waiting")


def test_worker_takes_the_most_urgent_waiting_job_first(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    worker_factory(LLM, {**lmq_env, "LMQ_CONCURRENCY": "1"})
    blocker = _busy(simulator, queue, 4)
    handles = {}
    for n in range(2):  # interleaved, the least urgent first
        for priority in ("low", "normal", "high"):
            handles[f"{priority}{n}"] = queue.chat(LLM, f"{priority} job {n}", config=FAST,
                                                   priority=priority, enqueue_anyway=True)
    _waiting(redis_url, 6)
    assert blocker.status() in ("STARTED", "PROGRESS")  # all six queued behind it
    simulator.admin.clear_faults()
    queue.cancel(blocker.id)  # the worker takes the next job now
    assert _start_order(handles) == ["high0", "high1", "normal0", "normal1", "low0", "low1"]


def test_a_job_waiting_past_the_aging_time_counts_one_level_higher(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    worker_factory(LLM, {**lmq_env, "LMQ_CONCURRENCY": "1", "LMQ_PRIORITY_AGING_S": "2"})
    blocker = _busy(simulator, queue, 60)
    handles = {"old-low": queue.chat(LLM, "waits long", config=FAST, priority="low",
                                     enqueue_anyway=True)}
    submitted = time.time()
    wait_until(lambda: time.time() - submitted > 2.5, timeout=10,
               message="the low job older than the aging time")
    handles["new-normal"] = queue.chat(LLM, "just came", config=FAST, enqueue_anyway=True)
    handles["new-low"] = queue.chat(LLM, "also low", config=FAST, priority="low",
                                    enqueue_anyway=True)
    _waiting(redis_url, 3)
    simulator.admin.clear_faults()
    queue.cancel(blocker.id)  # the worker takes the next job now, before the new ones age
    # The aged low job counts as normal and is older than the normal one.
    assert _start_order(handles) == ["old-low", "new-normal", "new-low"]


def test_an_unknown_priority_is_refused_before_sending(queue: JobQueue) -> None:
    from producers import InvalidJobError

    with pytest.raises(InvalidJobError, match="priority"):
        queue.chat(LLM, "hi", priority="urgent", enqueue_anyway=True)
    with pytest.raises(InvalidJobError, match="unknown priority 'urgent'"):
        queue.submit({"model": LLM, "messages": "hi"}, priority="urgent", enqueue_anyway=True)


def _lists(redis_url: str) -> dict[str, int]:
    """Waiting messages per priority list of the chat model's queue."""
    client = redis.Redis.from_url(redis_url)
    names = {"high": f"{queue_name(LLM)}\x06\x163", "normal": queue_name(LLM),
             "low": f"{queue_name(LLM)}\x06\x166"}
    return {level: int(client.llen(name)) for level, name in names.items()}


def test_cli_and_batch_files_send_to_their_priority_list(lmq_env, redis_url, tmp_path):  # type: ignore[no-untyped-def]
    """No worker: the messages stay where the CLI put them (the real CLI, real Redis)."""
    env = {key: value for key, value in lmq_env.items() if key != "LMQ_MODEL"}
    lmq("chat", LLM, "urgent", "--priority", "high", "--no-wait", "--enqueue-anyway", env=env)
    lmq("complete", LLM, "usual", "--no-wait", "--enqueue-anyway", env=env)
    requests = tmp_path / "requests.jsonl"
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}
    requests.write_text(json.dumps(line) + "\n" + json.dumps({**line, "custom_id": "b"}) + "\n")
    lmq("batch", "submit", str(requests), "--model-map", f"m={LLM}", "--enqueue-anyway",
        env=env)
    assert _lists(redis_url) == {"high": 1, "normal": 1, "low": 2}
    refused = lmq("chat", LLM, "x", "--priority", "urgent", "--no-wait", env=env, check=False)
    assert refused.returncode == 2 and "'urgent' is not one of" in refused.stderr


def test_a_killed_workers_job_comes_back_with_its_priority(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    """A low job running on a SIGKILLed worker goes back on the low list (kombu puts a
    restored message back at the end taken next, so on any other list it would run first):
    the restarted worker runs the normal jobs that waited meanwhile before it."""
    env = {**lmq_env, "LMQ_CONCURRENCY": "1", "LMQ_HOLD_LEASE_S": "60"}
    first = worker_factory(LLM, env)
    simulator.admin.set_timing(decode_tokens_per_s=30)
    simulator.admin.set_faults(reply_tokens=900)  # 30 s: still running when killed
    bulk = queue.chat(LLM, "bulk and long", priority="low", enqueue_anyway=True)
    wait_until(lambda: any(c["fragments"] >= 2 for c in predict_channels(simulator)),
               timeout=60, message="the low job generating")
    waiting = {f"normal{n}": queue.chat(LLM, f"normal {n}", config=FAST, enqueue_anyway=True)
               for n in range(2)}
    _waiting(redis_url, 2)
    first.kill()
    simulator.admin.set_faults(reply_tokens=3)
    worker_factory(LLM, env, name=first.name)  # recovers what its previous process held
    handles = {"low": bulk, **waiting}
    assert _start_order(handles) == ["normal0", "normal1", "low"]
    assert bulk.result(timeout=60).attempt == 2


def test_a_job_carries_its_tenant_label(worker_factory, lmq_env, redis_url):  # type: ignore[no-untyped-def]
    """The tenant label (default LMQ_TENANT) is recorded with the job and accepted by the
    worker (turns between tenants: test_tenant_turns)."""
    worker_factory(LLM, lmq_env)
    settings = Settings(broker_url=redis_url, result_backend=redis_url, tenant="team-a")
    with JobQueue(settings) as queue:
        default = queue.chat(LLM, "for team a", config=FAST)
        named = queue.chat(LLM, "for bob", config=FAST, tenant="bob@example.com")
        assert default.result(timeout=60).content and named.result(timeout=60).content
        assert queue.job_record(default.id)["tenant"] == "team-a"
        assert queue.job_record(named.id)["tenant"] == "bob@example.com"
        from producers import InvalidJobError

        with pytest.raises(InvalidJobError, match="tenant 'a b'"):
            queue.chat(LLM, "x", tenant="a b", enqueue_anyway=True)
