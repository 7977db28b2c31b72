"""Two GPU hosts: one LM Studio each, a worker of the same model on each, one Redis.

Each simulator (`python -m simulator` on its own port) stands for one GPU host with its own
LM Studio; each host's worker has its own admission group (LMQ_ADMISSION_GROUP, as the
runbook sets it per host) and its own GPU memory. Checked: jobs of one model spread over
both hosts; each host's admission budget and slots are its own; when one host's LM Studio
goes away mid-run, every job still ends with a result, the lost host's jobs served by the
other host.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from producers import JobQueue
from producers.redis_server import RedisServer
from producers.worker_process import WorkerProcess
from tests.support.services import start_worker
from tests.support.wait import wait_until
from workers.admission import status
from workers.contract import PROGRESS
from workers.settings import Settings

CHAT = "llama-3.2-1b-instruct"
SLOTS = 2
GPU_MEMORY = {"a": "24GiB", "b": "16GiB"}

pytestmark = pytest.mark.timeout(300)


@dataclass
class Host:
    """One simulated GPU host: its LM Studio and the worker next to it."""

    name: str
    sim: Any
    worker: WorkerProcess

    @property
    def group(self) -> str:
        return f"gpu-{self.name}"


@dataclass
class Cluster:
    hosts: dict[str, Host]
    queue: JobQueue
    store_url: str

    def by_worker(self) -> dict[str, Host]:
        return {host.worker.hostname: host for host in self.hosts.values()}

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {h.worker.hostname} ---\n{h.worker.log_tail(60)}" for h in self.hosts.values()
        )


@pytest.fixture()
def cluster(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    import redis

    from simulator.testing import running_simulator

    url = redis_server.url.rsplit("/", 1)[0] + "/9"
    redis.Redis.from_url(url).flushdb()  # our own private server: safe to flush
    with contextlib.ExitStack() as stack:
        hosts: dict[str, Host] = {}
        for name in ("a", "b"):
            sim = stack.enter_context(running_simulator(in_process=False))
            sim.admin.set_timing(decode_tokens_per_s=100.0)
            env = {
                "LMQ_BROKER_URL": url,
                "LMQ_RESULT_BACKEND": url,
                "LMQ_LMSTUDIO_HOST": sim.host,
                "LMQ_ADMISSION_GROUP": f"gpu-{name}",
                "LMQ_GPU_MEMORY": GPU_MEMORY[name],
                "LMQ_SLOTS": str(SLOTS),
                "LMQ_JOB_RETRY_BACKOFF_S": "0.2",
                "LMQ_CONNECT_BACKOFF_MAX_S": "2",
                "PYTHONUNBUFFERED": "1",
            }
            worker = start_worker(CHAT, env, name=f"host-{name}-{uuid.uuid4().hex[:6]}")
            stack.callback(worker.stop)
            hosts[name] = Host(name, sim, worker)
        settings = Settings(broker_url=url, result_backend=url, lmstudio_host=hosts["a"].sim.host)
        queue = stack.enter_context(JobQueue(settings))
        started = Cluster(hosts, queue, url)
        yield started
        call = getattr(request.node, "rep_call", None)
        if call is not None and call.failed:
            print(f"\n--- worker logs ---\n{started.log_tails()}")


def submit(cluster: Cluster, count: int, max_tokens: int) -> list[str]:
    jobs = [
        {
            "kind": "chat",
            "model": CHAT,
            "messages": f"job {i}",
            "config": {"max_tokens": max_tokens},
        }
        for i in range(count)
    ]
    return [handle.id for handle in cluster.queue.submit_many(jobs)]


def all_finished(cluster: Cluster, ids: list[str]) -> dict[str, tuple[str, Any]] | None:
    found = cluster.queue.fetch_results(ids)
    done = all(state in ("SUCCESS", "FAILURE", "REVOKED") for state, _ in found.values())
    return found if done else None


class SlotSampler:
    """Samples each host group's admitted jobs while a run goes on."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.peak: Counter[str] = Counter()
        self.budgets: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for host in self.cluster.hosts.values():
                group = status.group_status(self.cluster.store_url, host.group)
                self.budgets[host.group] = group.budget_bytes
                in_use = (sum(group.slots_in_use.values())  # per-token engines' jobs
                          + sum(i.slots_in_use for i in group.instances))  # llama.cpp's
                self.peak[host.group] = max(self.peak[host.group], in_use)

    def __enter__(self) -> SlotSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_jobs_spread_over_both_hosts_with_admission_per_host(cluster: Cluster) -> None:
    for host in cluster.hosts.values():
        host.sim.admin.set_timing(decode_tokens_per_s=60.0)
    with SlotSampler(cluster) as sampler:
        ids = submit(cluster, 24, max_tokens=24)
        found = wait_until(
            lambda: all_finished(cluster, ids), timeout=120, interval=0.1, message="24 results"
        )
    assert {state for state, _ in found.values()} == {"SUCCESS"}
    served = Counter(payload["worker"] for _, payload in found.values())
    assert set(served) == set(cluster.by_worker()), served  # both hosts served jobs
    # Each host's LM Studio ran exactly the predictions of the worker next to it.
    for host in cluster.hosts.values():
        predictions = [
            e
            for e in host.sim.admin.log(type="channelCreate")
            if e["msg"].get("endpoint") == "predict"
        ]
        assert len(predictions) == served[host.worker.hostname], (host.name, served)
    # Admission: one group per host, each with its own budget and its own slots.
    groups = set(status.list_groups(cluster.store_url))
    assert {"gpu-a", "gpu-b"} <= groups, groups
    assert sampler.budgets["gpu-a"] > sampler.budgets["gpu-b"] > 0  # 24 GiB vs 16 GiB hosts
    assert 0 < sampler.peak["gpu-a"] <= SLOTS and 0 < sampler.peak["gpu-b"] <= SLOTS, sampler.peak
    for name, host in cluster.hosts.items():
        group = status.group_status(cluster.store_url, host.group)
        assert CHAT in group.models, (name, group)


def test_a_host_lost_mid_run_loses_no_job(cluster: Cluster) -> None:
    for host in cluster.hosts.values():
        host.sim.admin.set_timing(decode_tokens_per_s=40.0)
    lost, survivor = cluster.hosts["a"], cluster.hosts["b"]
    ids = submit(cluster, 30, max_tokens=30)

    def running_on_lost_host() -> list[str] | None:
        metas = {job_id: cluster.queue.job_meta(job_id) for job_id in ids}
        finished_there = [
            i
            for i, m in metas.items()
            if m["status"] == "SUCCESS" and m["result"]["worker"] == lost.worker.hostname
        ]
        # Early in their reply (<= 10 of 30 tokens at 40/s: >= 0.5 s left), so none of
        # them can finish on host a between this read and the stop below.
        running_there = [
            i
            for i, m in metas.items()
            if m["status"] == PROGRESS
            and isinstance(m["result"], dict)
            and m["result"].get("worker") == lost.worker.hostname
            and (m["result"].get("tokens_so_far") or 0) <= 10
        ]
        return running_there if finished_there and running_there else None

    in_flight = wait_until(
        running_on_lost_host, timeout=60, interval=0.05, message="host a mid-run"
    )
    lost.sim.stop()  # host a's LM Studio is gone (and stays gone)

    found = wait_until(
        lambda: all_finished(cluster, ids), timeout=180, interval=0.2, message="30 results"
    )
    failed = {job_id: payload for job_id, (state, payload) in found.items() if state != "SUCCESS"}
    assert not failed, (failed, cluster.log_tails())
    for job_id in in_flight:  # what host a was running when it went away: done by host b
        assert found[job_id][1]["worker"] == survivor.worker.hostname

