"""Read side of admission: per host group, budget, reservations, slots and waiters.

    group_status(redis_url, group) -> GroupStatus
    list_groups(redis_url) -> list[str]
    all_status(redis_url) -> list[GroupStatus]

Read-only and consistent (one MULTI); tickets past their lease expiry count as gone, as
the semaphore would purge them. Used by `lmq gpu`, and reusable by `lmq workers` and the
metrics endpoint.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from workers import keys

_META_SUFFIX = ":meta"


@dataclass(frozen=True)
class GroupStatus:
    group: str
    budget_bytes: int  # usable: host memory minus the reserve (last written); -1: unknown
    weights_bytes: int  # weights of loaded models, once per model
    kv_bytes: int  # KV reserved by admitted jobs
    slots_in_use: dict[str, int] = field(default_factory=dict)  # model -> admitted jobs
    waiting: dict[str, int] = field(default_factory=dict)  # model -> waiting jobs
    models: dict[str, int] = field(default_factory=dict)  # model -> weights bytes

    @property
    def host_memory_known(self) -> bool:
        return self.budget_bytes >= 0

    @property
    def reserved_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes

    @property
    def free_bytes(self) -> int:
        """Budget left; -1 when the host's memory is unknown."""
        if not self.host_memory_known:
            return -1
        return self.budget_bytes - self.reserved_bytes

    @property
    def waiting_jobs(self) -> int:
        return sum(self.waiting.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "host_memory_known": self.host_memory_known,
            "reserved_bytes": self.reserved_bytes,
            "free_bytes": self.free_bytes,
            "waiting_jobs": self.waiting_jobs,
        }


def _client(redis_url: str | redis.Redis) -> redis.Redis:
    return redis.Redis.from_url(redis_url) if isinstance(redis_url, str) else redis_url


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def group_status(redis_url: str | redis.Redis, group: str) -> GroupStatus:
    """The group's admission state now (zeros for a group no worker has used)."""
    client = _client(redis_url)
    prefix = keys.admission(group)
    with client.pipeline(transaction=True) as pipe:
        pipe.time()
        pipe.hget(f"{prefix}:meta", "budget_bytes")
        pipe.zrange(f"{prefix}:exp", 0, -1, withscores=True)
        pipe.zrange(f"{prefix}:held", 0, -1)
        pipe.zrange(f"{prefix}:queue", 0, -1)
        pipe.hgetall(f"{prefix}:info")
        (secs, micros), budget, expiry, held, queue, info = pipe.execute()
    now_ms = secs * 1000 + micros // 1000
    live = {_text(i) for i, score in expiry if score > now_ms}
    tickets = {_text(k): json.loads(v) for k, v in info.items() if _text(k) in live}
    held_t = [tickets[_text(i)] for i in held if _text(i) in tickets]
    queued_t = [tickets[_text(i)] for i in queue if _text(i) in tickets]
    models: dict[str, int] = {}
    for t in held_t:
        if t["k"] == "load":
            models[t["m"]] = max(models.get(t["m"], 0), int(t["b"]))
    jobs = [t for t in held_t if t["k"] == "job"]
    return GroupStatus(
        group=group,
        budget_bytes=int(budget or 0),
        weights_bytes=sum(models.values()),
        kv_bytes=sum(int(t["b"]) for t in jobs),
        slots_in_use=dict(Counter(t["m"] for t in jobs)),
        waiting=dict(Counter(t["m"] for t in queued_t if t["k"] == "job")),
        models=models,
    )


def list_groups(redis_url: str | redis.Redis) -> list[str]:
    """Groups some worker has written a budget for."""
    client = _client(redis_url)
    head = keys.admission("")
    found = {
        _text(k)[len(head) : -len(_META_SUFFIX)]
        for k in client.scan_iter(match=f"{head}*{_META_SUFFIX}", count=500)
    }
    return sorted(found)


def all_status(redis_url: str | redis.Redis) -> list[GroupStatus]:
    client = _client(redis_url)
    return [group_status(client, group) for group in list_groups(client)]
