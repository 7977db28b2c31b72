"""The pool is sized from the GPU budget and the loaded context, after the model loads."""

from __future__ import annotations

import pytest
from celery import Celery

from tests.integration.test_worker_support import LLM, client_app, send
from tests.support.wait import wait_until
from workers.contract import CompletionJob

pytestmark = [pytest.mark.timeout(120)]
WEIGHTS = 807_694_464  # the simulator's llama-3.2-1b; KV 32 KiB/token, loaded context 4096
SMALL_GPU = (1 << 30) + WEIGHTS + 80 * (1 << 20)  # reserve 1 GiB; KV room for 2 slot contexts


def pool_max_concurrency(app: Celery, hostname: str) -> int:
    stats = app.control.inspect(destination=[hostname], timeout=2).stats() or {}
    return int(stats[hostname]["pool"]["max-concurrency"])


@pytest.mark.parametrize("gpu_memory, threads", [(str(SMALL_GPU), 2 + 2), ("24GiB", 4 + 2)])
def test_a_small_gpu_budget_gives_fewer_threads(gpu_memory, threads, worker_factory, lmq_env,
                                                redis_url, simulator):  # type: ignore[no-untyped-def]
    worker = worker_factory(LLM, {**lmq_env, "LMQ_GPU_MEMORY": gpu_memory, "LMQ_SLOTS": "4",
                                  "LMQ_PREFETCH_THREADS": "2"})
    wait_until(lambda: f"{threads} worker threads" in worker.log_tail(200), timeout=30,
               message=lambda: worker.log_tail(30))
    app = client_app(redis_url)
    assert pool_max_concurrency(app, worker.hostname) == threads
    done = send(app, CompletionJob(model=LLM, prompt="still serves", config={"max_tokens": 3}))
    assert done.get(timeout=30)["stats"]["predicted_tokens_count"] == 3
