"""Admission end to end: real `celery -A workers worker` processes, real Redis, the SDK
against the simulator's VRAM model (a prediction whose KV does not fit fails with an
out-of-memory error).

The GPU is small on purpose: llama-3.2-1b's weights plus 200 MiB of KV room, i.e. two
"big" jobs (prompt + max_tokens=3000, ~94 MiB of KV each) at once, never three.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from producers.worker_process import WorkerProcess
from tests.integration.test_worker_support import LLM, client_app, final, send
from tests.support.wait import wait_until
from workers.admission.semaphore import GroupSemaphore, Ticket
from workers.admission.status import group_status
from workers.contract import ChatJob

pytestmark = [pytest.mark.timeout(240)]

MIB = 1024**2
WEIGHTS_BYTES = 807_694_464  # llama-3.2-1b-instruct in the simulator's catalog
KV_ROOM_BYTES = 200 * MIB
VRAM_BYTES = WEIGHTS_BYTES + KV_ROOM_BYTES
BIG_MAX_TOKENS, SMALL_MAX_TOKENS = 3000, 100
SIM_CONFIG: dict[str, Any] = {
    "gpu": {"vram_bytes": VRAM_BYTES},
    "timing": {"decode_tokens_per_s": 100, "reply_min_tokens": 10, "reply_max_tokens": 30},
    "models": {"text-embedding-nomic-embed-text-v1.5": {"loaded": False}},
}


@pytest.fixture()
def small_gpu() -> Iterator[Any]:
    from simulator.testing import running_simulator

    with running_simulator(SIM_CONFIG) as sim:
        yield sim


def env_for(redis_url: str, sim: Any, **extra: str) -> dict[str, str]:
    return {"LMQ_BROKER_URL": redis_url, "LMQ_RESULT_BACKEND": redis_url,
            "LMQ_LMSTUDIO_HOST": sim.host, "LMQ_GPU_MEMORY": str(VRAM_BYTES),
            "LMQ_GPU_RESERVE": "0", "LMQ_SLOTS": "4", "PYTHONUNBUFFERED": "1", **extra}


def chat(max_tokens: int, index: int) -> ChatJob:
    return ChatJob(model=LLM, config={"max_tokens": max_tokens},
                   messages=[{"role": "user", "content": f"Tell me about item {index}."}])


def mixed_jobs(count: int, small_every: int = 4) -> list[ChatJob]:
    """Three big jobs to one small one (small_every=0: big jobs only)."""
    return [chat(SMALL_MAX_TOKENS if small_every and i % small_every == small_every - 1
                 else BIG_MAX_TOKENS, i) for i in range(count)]


def run_all(app: Celery, jobs: list[ChatJob]) -> dict[str, list[Any]]:
    """Send every job, wait for all; results by outcome ("ok" / "oom" / "other")."""
    handles = [send(app, job) for job in jobs]
    outcomes: dict[str, list[Any]] = {"ok": [], "oom": [], "other": []}
    for handle in handles:
        final(handle, timeout_s=120)
        if handle.successful():
            outcomes["ok"].append(handle.result)
        elif "out of memory" in str(handle.result):
            outcomes["oom"].append(str(handle.result))
        else:
            outcomes["other"].append(repr(handle.result))
    return outcomes


def test_flood_without_oom_with_admission(small_gpu: Any, redis_url: str,
                                         worker_factory: Callable[..., WorkerProcess]) -> None:
    worker_factory(LLM, env_for(redis_url, small_gpu))
    outcomes = run_all(client_app(redis_url), mixed_jobs(32))
    assert outcomes["oom"] == [] and outcomes["other"] == []
    assert len(outcomes["ok"]) == 32


def test_flood_produces_oom_without_admission(small_gpu: Any, redis_url: str,
                                             worker_factory: Callable[..., WorkerProcess]
                                             ) -> None:
    """The control: the same flood with LMQ_ADMISSION=false overflows the simulated GPU."""
    worker_factory(LLM, env_for(redis_url, small_gpu, LMQ_ADMISSION="false"))
    outcomes = run_all(client_app(redis_url), mixed_jobs(32))
    assert outcomes["other"] == []
    assert len(outcomes["oom"]) > 0


def test_two_workers_of_one_host_share_one_budget(
        small_gpu: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    workers = [worker_factory(LLM, env_for(redis_url, small_gpu)) for _ in range(2)]
    outcomes = run_all(client_app(redis_url), mixed_jobs(32, small_every=0))
    assert outcomes["oom"] == [] and outcomes["other"] == []
    assert {r["worker"] for r in outcomes["ok"]} == {w.hostname for w in workers}


def test_separate_budgets_per_worker_overflow(
        small_gpu: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    """The control: two workers that do not share a budget admit four big jobs at once."""
    for index in range(2):
        worker_factory(LLM, env_for(redis_url, small_gpu, LMQ_ADMISSION_GROUP=f"own-{index}"))
    outcomes = run_all(client_app(redis_url), mixed_jobs(32, small_every=0))
    assert len(outcomes["oom"]) > 0


def test_leases_of_a_killed_worker_are_recovered(
        small_gpu: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    ttl_s = 2.0
    worker = worker_factory(LLM, env_for(redis_url, small_gpu, LMQ_LEASE_TTL_S=str(ttl_s)))
    small_gpu.admin.set_faults(slow_prefill_s=120.0)  # jobs hold their leases for minutes
    app = client_app(redis_url)
    for index in range(2):
        send(app, chat(BIG_MAX_TOKENS, index))
    client = redis.Redis.from_url(redis_url)
    group = small_gpu.host
    wait_until(lambda: group_status(client, group).slots_in_use.get(LLM) == 2, timeout=30,
               message=lambda: f"two admitted jobs; log:\n{worker.log_tail()}")
    assert worker.process is not None
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    # Everything the dead worker held (KV of both jobs, the weights) is free again within
    # the lease time: a waiting load of another model as large as the whole GPU gets in.
    probe = GroupSemaphore(client, group, VRAM_BYTES, ttl_s)
    try:
        waiter = WaiterThread(probe, Ticket("load", "probe-model", VRAM_BYTES))
        wait_until(lambda: waiter.held, timeout=ttl_s + 1.0,
                   message="the dead worker's leases to expire")
    finally:
        probe.close()


class WaiterThread:
    def __init__(self, semaphore: GroupSemaphore, ticket: Ticket) -> None:
        import threading

        self.held = False
        self.thread = threading.Thread(target=self._run, args=(semaphore, ticket), daemon=True)
        self.thread.start()

    def _run(self, semaphore: GroupSemaphore, ticket: Ticket) -> None:
        semaphore.acquire(ticket)
        self.held = True
