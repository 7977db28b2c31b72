"""Files and batch records of the gateway, in Redis, so they survive a gateway restart and
every gateway replica of one pool sees the same ones.

    keys.gateway_file(id)    hash: meta (the OpenAI file object, JSON), tenant, content,
                             requests (a batch input file's validated jobs, `batch_input`)
    keys.gateway_batch(id)   hash: record (the OpenAI batch object, JSON), tenant,
                             priority, cancel, ending (`batch_lifecycle`)
    keys.gateway_index(k)    sorted set of ids by creation time, for listing
    gateway_index("batch") + ":open"   set of batches not finished (OpenBatches)
    <record key> + ":lock"   which gateway works on a batch now (token, expires)

Each belongs to the tenant whose key created it; another tenant gets a 404, as for an id
that never existed. Everything expires with the pool's results (LMQ_RESULT_EXPIRES_S).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, cast

import redis

from workers import keys

LOCK_TTL_S = 30.0
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
_UNLOCK = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
           "return redis.call('del', KEYS[1]) else return 0 end")


class Records:
    """One kind of record ('file' or 'batch') of the gateway."""

    def __init__(self, client: redis.Redis, kind: str, ttl_s: int) -> None:
        self.client, self.kind, self.ttl_s = client, kind, ttl_s
        self._key = keys.gateway_file if kind == "file" else keys.gateway_batch
        self._field = "meta" if kind == "file" else "record"

    def put(self, record_id: str, record: dict[str, Any], tenant: str,
            **extra: bytes | str) -> None:
        key = self._key(record_id)
        pipe = self.client.pipeline(transaction=False)
        fields: dict[str, Any] = {self._field: json.dumps(record), "tenant": tenant, **extra}
        pipe.hset(key, mapping=cast(Any, fields))
        pipe.expire(key, self.ttl_s)
        # Scored by the exact time: created_at is whole seconds, too coarse to order by.
        pipe.zadd(keys.gateway_index(self.kind), {record_id: time.time()})
        pipe.execute()

    def update(self, record_id: str, record: dict[str, Any]) -> None:
        self.client.hset(self._key(record_id), self._field, json.dumps(record))

    def get(self, record_id: str, tenant: str) -> dict[str, Any] | None:
        raw = self.client.hmget(self._key(record_id), [self._field, "tenant"])
        if raw[0] is None or text(raw[1] or b"") != tenant:
            return None
        record: dict[str, Any] = json.loads(raw[0])
        return record

    def field(self, record_id: str, name: str) -> bytes | None:
        value = self.client.hget(self._key(record_id), name)
        return value if isinstance(value, bytes) or value is None else str(value).encode()

    def fields(self, record_id: str, *names: str) -> list[bytes | None]:
        """Several fields in one read."""
        return [value if isinstance(value, bytes) or value is None else str(value).encode()
                for value in self.client.hmget(self._key(record_id), list(names))]

    def set_field(self, record_id: str, name: str, value: str, *,
                  only_new: bool = False) -> None:
        if only_new:
            self.client.hsetnx(self._key(record_id), name, value)
        else:
            self.client.hset(self._key(record_id), name, value)

    def delete(self, record_id: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self._key(record_id))
        pipe.zrem(keys.gateway_index(self.kind), record_id)
        pipe.execute()

    def newest(self, tenant: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]],
                                                                           bool]:
        """A page of the tenant's records, newest first, starting after the id `after`."""
        ids = [text(raw) for raw in self.client.zrevrange(keys.gateway_index(self.kind), 0, -1)]
        if after is not None:
            ids = ids[ids.index(after) + 1:] if after in ids else []
        page: list[dict[str, Any]] = []
        for record_id in ids:
            record = self.get(record_id, tenant)
            if record is None:
                continue
            if len(page) == limit:
                return page, True
            page.append(record)
        return page, False

    def get_any(self, record_id: str) -> tuple[dict[str, Any], str] | None:
        """(record, its tenant) whoever owns it: for the gateway's own background work."""
        raw = self.client.hmget(self._key(record_id), [self._field, "tenant"])
        if raw[0] is None:
            return None
        return json.loads(raw[0]), text(raw[1] or b"")

    def every(self) -> list[dict[str, Any]]:
        """Every record still stored, whoever owns it (one pipelined read)."""
        ids = self.client.zrange(keys.gateway_index(self.kind), 0, -1)
        pipe = self.client.pipeline(transaction=False)
        for record_id in ids:
            pipe.hget(self._key(text(record_id)), self._field)
        return [json.loads(raw) for raw in pipe.execute() if raw is not None]

    def lock(self, record_id: str, ttl_s: float = LOCK_TTL_S) -> str | None:
        """A token if this process may work on the record now (several gateways may run),
        else None. The lock expires by itself, so a gateway that died holding it delays
        the next one by at most `ttl_s`; long work renews it (`renew`)."""
        token = uuid.uuid4().hex
        taken = self.client.set(self._lock_key(record_id), token, nx=True, px=int(ttl_s * 1000))
        return token if taken else None

    def renew(self, record_id: str, token: str, ttl_s: float = LOCK_TTL_S) -> bool:
        return bool(self.client.eval(_RENEW, 1, self._lock_key(record_id), token,
                                     int(ttl_s * 1000)))

    def unlock(self, record_id: str, token: str) -> None:
        """Only the holder's own lock: one that expired and was taken since is not touched."""
        self.client.eval(_UNLOCK, 1, self._lock_key(record_id), token)

    def _lock_key(self, record_id: str) -> str:
        return self._key(record_id) + ":lock"


class OpenBatches:
    """The ids of batches not finished yet: what the gateways' background loop advances
    (a set in Redis, so a restarted gateway resumes them)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.key = keys.gateway_index("batch") + ":open"

    def add(self, batch_id: str) -> None:
        self.client.sadd(self.key, batch_id)

    def remove(self, batch_id: str) -> None:
        self.client.srem(self.key, batch_id)

    def ids(self) -> list[str]:
        return sorted(text(raw) for raw in cast(Any, self.client.smembers(self.key)))


def text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
