"""Batch bookkeeping in Redis, so any process can reattach by batch id.

    keys.batch(id)               hash: created_at, input, total, kinds, cancelled_at
    keys.batch(id) + ":custom"   hash: custom_id -> job id
    keys.batch(id) + ":request"  hash: job id -> {"custom_id", "url", "line", "model"}
    keys.batch_jobs(id)          list: job ids in file order (written by the publisher)

Everything expires with the results (settings.result_expires_s).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from producers.batch._request import BatchRequest
from workers import keys

PAGE = 1000


class BatchNotFoundError(LookupError):
    """No bookkeeping for this batch id (unknown, or expired)."""


def custom_key(batch_id: str) -> str:
    return keys.batch(batch_id) + ":custom"


def request_key(batch_id: str) -> str:
    return keys.batch(batch_id) + ":request"


@dataclass(frozen=True)
class RequestInfo:
    job_id: str
    custom_id: str
    url: str
    line: int
    model: str


def record(client: redis.Redis, batch_id: str, requests: Sequence[BatchRequest],
           job_ids: Sequence[str], *, source: str, ttl_s: int) -> None:
    """Write the bookkeeping before the jobs are published (pipelined, in pages)."""
    kinds: dict[str, int] = {}
    for request in requests:
        kinds[request.url] = kinds.get(request.url, 0) + 1
    meta: dict[str, str | int | float] = {
        "created_at": time.time(), "input": source, "total": len(requests),
        "kinds": json.dumps(kinds)}
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.batch(batch_id), mapping=cast(Any, meta))
    for start in range(0, len(requests), PAGE):
        page = list(zip(requests[start : start + PAGE], job_ids[start : start + PAGE],
                        strict=True))
        pipe.hset(custom_key(batch_id), mapping={r.custom_id: j for r, j in page})
        pipe.hset(request_key(batch_id), mapping={j: _info(r) for r, j in page})
    for key in (keys.batch(batch_id), custom_key(batch_id), request_key(batch_id)):
        pipe.expire(key, ttl_s)
    pipe.execute()


def _info(request: BatchRequest) -> str:
    return json.dumps({"custom_id": request.custom_id, "url": request.url,
                       "line": request.line, "model": request.job.model})


def meta(client: redis.Redis, batch_id: str) -> dict[str, str]:
    raw = client.hgetall(keys.batch(batch_id))
    if not raw:
        raise BatchNotFoundError(f"no batch {batch_id!r} (unknown id, or its results expired)")
    return {_text(k): _text(v) for k, v in raw.items()}


def job_ids(client: redis.Redis, batch_id: str) -> list[str]:
    """Job ids in file order."""
    return [_text(raw) for raw in client.lrange(keys.batch_jobs(batch_id), 0, -1)]


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def requests(client: redis.Redis, batch_id: str,
             ids: Sequence[str] | None = None) -> Iterator[list[RequestInfo]]:
    """Pages of request info, in file order: of the jobs published, or of `ids` (recorded
    jobs, published or not)."""
    ids = job_ids(client, batch_id) if ids is None else ids
    for start in range(0, len(ids), PAGE):
        page = list(ids[start : start + PAGE])
        raws = client.hmget(request_key(batch_id), page)
        yield [_request_info(job_id, raw) for job_id, raw in zip(page, raws, strict=True)]


def _request_info(job_id: str, raw: Any) -> RequestInfo:
    data: dict[str, Any] = json.loads(raw) if raw else {}
    return RequestInfo(job_id, str(data.get("custom_id", "")), str(data.get("url", "")),
                       int(data.get("line", 0)), str(data.get("model", "")))


def mark_cancelled(client: redis.Redis, batch_id: str) -> None:
    client.hsetnx(keys.batch(batch_id), "cancelled_at", time.time())
