"""What every fault test checks: each job ends exactly once, nothing lost, nothing twice.

`ResultTap` listens to every state the result backend publishes (Celery's Redis backend
publishes each stored state on the result key's channel) while a test runs, so a job that
ran twice and stored two different results is caught even if the last write looks fine.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import redis

from producers.job_queue import JobQueue
from tests.support.wait import wait_until
from workers.settings import Settings

LLM = "llama-3.2-1b-instruct"
FINISHED = ("SUCCESS", "FAILURE", "REVOKED")
# The broker `global_keyprefix` of `tests.faults.prefixed_workers` (a deployment's choice).
KEY_PREFIX = "tenant-a:"
META_PREFIX = "celery-task-meta-"


class ResultTap:
    """Every final state published per job id, in order."""

    def __init__(self, redis_url: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(f"{META_PREFIX}*")
        self.seen: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.pubsub.get_message(timeout=0.2)
            except (redis.ConnectionError, OSError):
                return  # Redis went away (a restart test); states are also read at the end
            if message and message["type"] == "pmessage":
                meta = json.loads(message["data"])
                if meta.get("status") in FINISHED:
                    job_id = message["channel"].decode()[len(META_PREFIX):]
                    self.seen[job_id].append((meta["status"], meta.get("result")))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()
        self.client.close()

    def distinct_results(self, job_id: str) -> list[tuple[str, str]]:
        """The different final (state, result) pairs a caller could have read."""
        return sorted({(state, json.dumps(result, sort_keys=True))
                       for state, result in self.seen.get(job_id, [])})


def job_queue(redis_url: str) -> JobQueue:
    return JobQueue(Settings(broker_url=redis_url, result_backend=redis_url))


def wait_finished(queue: JobQueue, ids: list[str], timeout: float) -> dict[str, tuple[str, Any]]:
    """id -> (state, payload) once every job is in a final state (or fail at the deadline)."""
    pending = set(ids)
    found: dict[str, tuple[str, Any]] = {}

    def all_done() -> bool:
        try:
            outcomes = queue.fetch_results(sorted(pending))
        except (redis.ConnectionError, redis.BusyLoadingError):
            return False  # Redis restarting: ask again
        for job_id, outcome in outcomes.items():
            if outcome[0] in FINISHED:
                found[job_id] = outcome
                pending.discard(job_id)
        return not pending

    wait_until(all_done, timeout=timeout, interval=0.2,
               message=lambda: f"{len(pending)} of {len(ids)} jobs to finish "
                               f"(e.g. {sorted(pending)[:3]})")
    return found


def assert_each_once(found: dict[str, tuple[str, Any]], tap: ResultTap | None,
                     errors: tuple[type[BaseException], ...] = ()) -> dict[str, int]:
    """Every job ended with a result or one of `errors`; no caller saw two outcomes."""
    counts: dict[str, int] = defaultdict(int)
    for job_id, (state, payload) in found.items():
        counts[state] += 1
        if state == "SUCCESS":
            assert payload["job_id"] == job_id, (job_id, payload)
        else:
            assert isinstance(payload, errors), f"{job_id}: {state} {payload!r}"
            assert str(payload), f"{job_id}: an error without a message"
        if tap is not None:
            distinct = tap.distinct_results(job_id)
            assert len(distinct) <= 1, f"{job_id} delivered twice, differently: {distinct}"
    return dict(counts)


def broker_drained(redis_url: str, model: str = LLM) -> bool:
    """No message left in the model's queue and none delivered but unacknowledged."""
    client = redis.Redis.from_url(redis_url)
    try:
        return client.llen(f"lmq.{model}") == 0 and client.hlen("unacked") == 0
    finally:
        client.close()


def broker_picture(redis_url: str, job_ids: list[str], models: Sequence[str] = (LLM,)) -> str:
    """Where the given jobs are on the broker (for a failure message)."""
    client = redis.Redis.from_url(redis_url)
    try:
        lists = [f"lmq.{model}" for model in models]
        queued = [m for key in lists for m in client.lrange(key, 0, -1)
                  if any(i.encode() in m for i in job_ids)]
        unacked = [k for k, v in client.hgetall("unacked").items()
                   if any(i.encode() in v for i in job_ids)]
        held = [k.decode() for k in client.scan_iter("lmq:*held*")]
        popping = [k.decode() for k in client.scan_iter("lmq:popping:*")]
        return (f"queued: {len(queued)}, unacked: {len(unacked)}, queue lengths "
                f"{[client.llen(key) for key in lists]}, unacked total {client.hlen('unacked')}, "
                f"held keys: {held[:10]}, popping keys: {popping[:10]}")
    finally:
        client.close()
