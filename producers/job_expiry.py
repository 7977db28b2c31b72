"""End a job that no worker started before its `expires_s`, from the producer's side.

A worker refuses an expired job when it takes it (`workers.jobs.deadline`), but with no
worker alive nothing takes it, and it would stay PENDING for ever. So whoever waits on it
(`JobHandle.result()`/`aresult()`/`status()`, `lmq status`, the gateway, the corpus
dispatcher) ends it once its expiry has passed and it is still unstarted.

One Lua script in the result backend's Redis, atomic with the worker's start script
(`workers.delivery.result_store.START_SCRIPT`), decides which side wins:

* the result key holds any state (a worker wrote STARTED, or the job ended): nothing is
  written; the worker's own start-time expiry check and the job's own end stand;
* else the job's revoke marker is stored (`workers.keys.revoked`, as a cancel does) and its
  final state FAILURE with `JobExpiredError` is written and published, in the same step.

A worker that takes the message afterwards finds the marker with a FAILURE stored: its
start script keeps that state and the job never runs. No revoke is broadcast: a worker's
in-memory revoked set would make Celery store REVOKED over the expired state.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery, states

from workers import keys
from workers.error import JobExpiredError

DEFAULT_TTL_S = 7 * 24 * 3600

EXPIRE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if not (ok and type(meta) == 'table' and meta['status'] == 'PENDING') then
    return current
  end
end
redis.call('SET', KEYS[2], 1, 'EX', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return ARGV[1]
"""


def expires_at(record: dict[str, Any] | None) -> float | None:
    """When a job registered with `record` (`producers.job_registry`) expires, if it does."""
    if not record or record.get("expires_s") is None or record.get("submitted_at") is None:
        return None
    return float(record["submitted_at"]) + float(record["expires_s"])


def is_past(deadline: float | None, now: float | None = None) -> bool:
    return deadline is not None and (now or time.time()) >= deadline


def expired_meta(app: Celery, job_id: str, deadline: float) -> bytes | str:
    """The encoded FAILURE meta of a job that expired while waiting (Celery's own format,
    so every reader rebuilds the JobExpiredError)."""
    backend = app.backend
    error = JobExpiredError(
        f"job {job_id} expired: not started within its expires_s (no worker had taken it "
        f"{time.time() - deadline:.1f}s after the deadline), so it never ran; start a worker "
        f"for its model, or submit it again with a longer expires_s")
    meta = backend._get_result_meta(result=backend.encode_result(error, states.FAILURE),
                                    state=states.FAILURE, traceback=None, request=None)
    meta["task_id"] = job_id
    return backend.encode(meta)  # type: ignore[no-any-return]


def _script_args(app: Celery, job_id: str, deadline: float) -> tuple[list[Any], list[Any]]:
    ttl_s = int(getattr(app.backend, "expires", None) or DEFAULT_TTL_S)
    return ([app.backend.get_key_for_task(job_id), keys.revoked(job_id)],
            [expired_meta(app, job_id, deadline), ttl_s])


def expire_unstarted(app: Celery, client: Any, job_id: str,
                     deadline: float) -> dict[str, Any] | None:
    """End `job_id` as expired if no worker started it; its meta either way (decoded).
    `client`: a redis.Redis on the result backend. None when the backend is not Redis."""
    if getattr(app.backend, "client", None) is None:  # not a Redis backend
        return None
    script_keys, args = _script_args(app, job_id, deadline)
    raw = client.eval(EXPIRE_SCRIPT, len(script_keys), *script_keys, *args)
    return app.backend.decode_result(raw)  # type: ignore[no-any-return]


async def aexpire_unstarted(app: Celery, client: Any, job_id: str,
                            deadline: float) -> dict[str, Any] | None:
    """`expire_unstarted` on a redis.asyncio client."""
    if getattr(app.backend, "client", None) is None:
        return None
    script_keys, args = _script_args(app, job_id, deadline)
    raw = await client.eval(EXPIRE_SCRIPT, len(script_keys), *script_keys, *args)
    return app.backend.decode_result(raw)  # type: ignore[no-any-return]
