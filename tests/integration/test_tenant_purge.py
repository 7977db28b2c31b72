"""The transport of every non-worker process: `celery -A workers purge` empties the tenants'
lists too (issue 20: a purged job never runs later), and a task sent with Celery's API
rings its queue's bell. Real Redis, the real `celery` command in a subprocess, a real
worker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from producers import JobQueue
from producers.worker_process import PROJECT_ROOT
from tests.integration.test_priority import FAST
from tests.integration.test_worker_support import LLM, predict_channels
from workers import keys, waiting
from workers.contract import TASK_CHAT, ChatJob, queue_name
from workers.settings import Settings

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture()
def queue(redis_url: str) -> Iterator[JobQueue]:
    with JobQueue(Settings(broker_url=redis_url, result_backend=redis_url)) as started:
        yield started


def purge(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "workers", "purge", "-f",
                           *args], env={**os.environ, **env}, cwd=PROJECT_ROOT, check=True,
                          capture_output=True, text=True, timeout=60)
    return done.stdout


def test_purge_deletes_every_tenants_jobs_and_none_runs_later(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    purged = [queue.chat(LLM, f"{tenant} {n}", config=FAST, tenant=tenant, priority=priority,
                         enqueue_anyway=True)
              for tenant in ("big", "small", None) for priority in ("normal", "low")
              for n in range(2)]
    broker = redis.Redis.from_url(redis_url)
    assert sum(n for by in waiting.counts(broker, LLM).values() for n in by.values()) == 12
    out = purge(lmq_env, "-Q", queue_name(LLM))
    assert "Purged 12 messages" in out, out
    assert sum(n for by in waiting.counts(broker, LLM).values() for n in by.values()) == 0
    assert not broker.keys(keys.tenant_turns("*"))  # no tenant left in any turns
    # A job queued after the purge runs (its tenant registers again); the purged never do.
    worker_factory(LLM, {**lmq_env, "LMQ_CONCURRENCY": "1"})
    assert queue.chat(LLM, "after", config=FAST, tenant="big").result(timeout=60).content
    assert len(predict_channels(simulator)) == 1
    assert {handle.status() for handle in purged} == {"PENDING"}
    assert "No messages purged" in purge(lmq_env, "-Q", queue_name(LLM))


def test_a_task_sent_with_celerys_api_rings_its_queues_bell(redis_url, queue):  # type: ignore[no-untyped-def]
    """`app.send_task` onto a job queue wakes an idle worker as `JobQueue` does: a bell
    token per job, at most BELL_TOKENS_MAX kept; other queues have no bell."""
    broker = redis.Redis.from_url(redis_url)
    job = ChatJob(model=LLM, messages="hello").model_dump(mode="json")
    sent = keys.BELL_TOKENS_MAX + 6
    for _ in range(sent):
        queue.app.send_task(TASK_CHAT, args=(job,), queue=queue_name(LLM))
    queue.app.send_task(TASK_CHAT, args=(job,), queue="not-a-job-queue")
    assert broker.llen(keys.bell(queue_name(LLM))) == keys.BELL_TOKENS_MAX
    assert sum(n for by in waiting.counts(broker, LLM).values() for n in by.values()) == sent
    assert not broker.exists(keys.bell("not-a-job-queue"))
