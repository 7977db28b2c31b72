"""Read side of admission: per host group, budget, reservations, slots and waiters, and
per loaded instance in it, KV cells, reserved cells, parallel slots and waiters.

    group_status(redis_url, group) -> GroupStatus     (with .instances)
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
from workers.admission.instance import INSTANCE_MARK

_META_SUFFIX = ":meta"
_SHAPE_SUFFIX = ":shape"


@dataclass(frozen=True)
class InstanceStatus:
    """One loaded instance's KV cells (admission's first layer)."""

    identifier: str
    model: str
    cells: int  # n_ctx
    parallel: int
    unified: bool
    seq_cells: int
    reserved_cells: int  # by admitted jobs
    slots_in_use: int
    waiting: int
    source: str

    @property
    def free_cells(self) -> int:
        return self.cells - self.reserved_cells

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "free_cells": self.free_cells}


@dataclass(frozen=True)
class GroupStatus:
    group: str
    budget_bytes: int  # usable: host memory minus the reserve (last written); -1: unknown
    weights_bytes: int  # weights of loaded models, once per model
    kv_bytes: int  # KV reserved by admitted jobs
    slots_in_use: dict[str, int] = field(default_factory=dict)  # model -> admitted jobs
    waiting: dict[str, int] = field(default_factory=dict)  # model -> waiting jobs
    models: dict[str, int] = field(default_factory=dict)  # model -> weights (+ KV at load)
    instances: list[InstanceStatus] = field(default_factory=list)

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
            "instances": [i.to_dict() for i in self.instances],
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
    """The group's admission state now (zeros for a group no worker has used), with its
    instances'."""
    client = _client(redis_url)
    status = _semaphore_status(client, group)
    instances = [_instance_status(client, group + INSTANCE_MARK + ident)
                 for ident in _instance_ids(client, group)]
    return GroupStatus(status.group, status.budget_bytes, status.weights_bytes,
                       status.kv_bytes, status.slots_in_use, status.waiting, status.models,
                       [i for i in instances if i is not None])


def _glob_escaped(text: str) -> str:
    """A literal for SCAN's MATCH (a host group may be "[::1]:1234")."""
    return "".join(f"\\{c}" if c in "\\*?[]" else c for c in text)


def _instance_ids(client: redis.Redis, group: str) -> list[str]:
    head = keys.admission(group + INSTANCE_MARK)
    match = f"{_glob_escaped(head)}*{_SHAPE_SUFFIX}"
    return sorted(_text(k)[len(head): -len(_SHAPE_SUFFIX)]
                  for k in client.scan_iter(match=match, count=500))


def _instance_status(client: redis.Redis, instance_group: str) -> InstanceStatus | None:
    shape = {_text(k): _text(v) for k, v in
             client.hgetall(keys.admission(instance_group) + _SHAPE_SUFFIX).items()}
    if not shape:
        return None
    held = _semaphore_status(client, instance_group)
    return InstanceStatus(
        identifier=instance_group.split(INSTANCE_MARK, 1)[1], model=shape.get("model", ""),
        cells=int(shape.get("cells", 0)), parallel=int(shape.get("parallel", 0)),
        unified=shape.get("unified") == "1", seq_cells=int(shape.get("seq_cells", 0)),
        reserved_cells=held.kv_bytes, slots_in_use=sum(held.slots_in_use.values()),
        waiting=held.waiting_jobs, source=shape.get("source", ""))


def _semaphore_status(client: redis.Redis, group: str) -> GroupStatus:
    """One semaphore's state (a host group's in bytes, an instance's in cells)."""
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
    return sorted(group for group in found if INSTANCE_MARK not in group)


def all_status(redis_url: str | redis.Redis) -> list[GroupStatus]:
    client = _client(redis_url)
    return [group_status(client, group) for group in list_groups(client)]
