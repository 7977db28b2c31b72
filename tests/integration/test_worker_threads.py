"""The pool's size and predictions at once do not shrink with a small GPU budget: admission
admits each job by its own KV, so small jobs still use every slot."""

from __future__ import annotations

import pytest
import redis
from celery import Celery

from tests.integration.test_worker_support import LLM, client_app, final, send
from tests.support.wait import wait_until
from workers.admission.status import group_status
from workers.contract import CompletionJob

pytestmark = [pytest.mark.timeout(120)]
WEIGHTS = 807_694_464  # the simulator's llama-3.2-1b; KV 32 KiB/token, loaded context 4096
KV_AT_LOAD = 4096 * 32 * 1024  # llama.cpp allocates the KV cache for the context at load
SMALL_GPU = (1 << 30) + WEIGHTS + KV_AT_LOAD + 80 * (1 << 20)  # reserve 1 GiB; 80 MiB spare


def pool_max_concurrency(app: Celery, hostname: str) -> int:
    stats = app.control.inspect(destination=[hostname], timeout=2).stats() or {}
    return int(stats[hostname]["pool"]["max-concurrency"])


@pytest.mark.parametrize("gpu_memory", [str(SMALL_GPU), "24GiB"])
def test_the_pool_is_slots_plus_prefetch_whatever_the_budget(
        gpu_memory, worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker = worker_factory(LLM, {**lmq_env, "LMQ_GPU_MEMORY": gpu_memory, "LMQ_SLOTS": "4",
                                  "LMQ_PREFETCH_THREADS": "2"})
    wait_until(lambda: "6 jobs at once in the pool" in worker.log_tail(200), timeout=30,
               message=lambda: worker.log_tail(30))
    app = client_app(redis_url)
    assert pool_max_concurrency(app, worker.hostname) == 4 + 2
    done = send(app, CompletionJob(model=LLM, prompt="still serves", config={"max_tokens": 3}))
    assert done.get(timeout=30)["stats"]["predicted_tokens_count"] == 3


def test_small_jobs_use_every_slot_on_a_small_gpu(worker_factory, lmq_env, redis_url,
                                                  simulator):  # type: ignore[no-untyped-def]
    """Room for two slot-sized contexts (80 MiB), but a 3-token job needs < 1 MiB: four run
    at once, admitted by the shared semaphore and predicting in the simulator."""
    worker = worker_factory(LLM, {**lmq_env, "LMQ_GPU_MEMORY": str(SMALL_GPU),
                                  "LMQ_SLOTS": "4", "LMQ_PREFETCH_THREADS": "2"})
    simulator.admin.set_faults(slow_prefill_s=3.0)  # the jobs hold their slots meanwhile
    app = client_app(redis_url)
    jobs = [send(app, CompletionJob(model=LLM, prompt=f"short {i}", config={"max_tokens": 3}))
            for i in range(4)]
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: group_status(client, simulator.host).instances[0].slots_in_use == 4,
               timeout=20, message=lambda: f"four admitted jobs; log:\n{worker.log_tail(30)}")
    in_use = {i["modelKey"]: i["slotsInUse"] for i in simulator.admin.state()["instances"]}
    assert in_use[LLM] == 4
    for job in jobs:
        assert final(job, timeout_s=30).successful()
