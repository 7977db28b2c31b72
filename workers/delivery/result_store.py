"""Delivery bookkeeping: redelivered jobs that already finished, the attempt count, STARTED.

A job may run more than once (a worker killed after storing its result but before the
acknowledgement, a janitor restoring a lost worker's message, or a duplicate message with
the same id). Two layers stop it running twice on LM Studio:

1. Celery's `worker_deduplicate_successful_tasks` (on in `workers.celery`): a message that
   the broker marks as redelivered, whose id already has a SUCCESS result, is acknowledged
   without running the task.
2. `task_prerun` here: if the backend holds SUCCESS for the id, the stored result is kept,
   and the task returns it (`take_stored`) instead of predicting again. This also covers
   duplicates that are not flagged as redelivered.

A job revoked before it started (its stored state REVOKED, or its revoke marker from
`workers.delivery.revoke_store`) never runs: `take_revoked` tells the task, which ends it
REVOKED without touching a REVOKED state already stored. A marker next to a stored FAILURE
is a job a producer ended as expired while no worker had started it
(`producers.job_expiry`, whose script is atomic with this one): that FAILURE is kept too.

One round trip per job start. With a Redis result backend, `task_prerun` runs one Lua script
(`START_SCRIPT`) that reads the stored meta; unless it is SUCCESS, it writes the STARTED
state (the meta Celery's `task_track_started` would write, extended fields included, and
its PUBLISH), counts the attempt and, when our keys share the backend's Redis, writes
the job's running entry of `workers.metrics` (`_running_entry`). So `workers.celery`
turns Celery's own `task_track_started` off: Celery's write costs two more round trips
(a GET, then SETEX+PUBLISH) and would come after ours anyway. Other backends: the same three steps
through the backend API.

Attempt: every start of a job increments `workers.keys.attempt(job_id)` =
`lmq:attempt:<job_id>` in the result backend's Redis (expires with the result), so
`result.attempt` is 1 for the first run and counts redeliveries and retries after that.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, states
from celery.signals import task_prerun

from workers import keys
from workers.contract import TASK_NAMES

log = logging.getLogger(__name__)

# Lua: store the encoded meta ARGV[1] at KEYS[1] (expiring after ARGV[2] seconds; 0: never)
# and PUBLISH it on the key's channel, as Celery's Redis backend writes a state.
WRITE_META = """\
if tonumber(ARGV[2]) > 0 then
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
"""

START_SCRIPT = """
local current = redis.call('GET', KEYS[1])
local revoked = redis.call('EXISTS', KEYS[3]) == 1
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return {0, current}
  end
  if ok and type(meta) == 'table' and meta['status'] == 'REVOKED' then
    return {-1, 'REVOKED'}
  end
  if revoked and ok and type(meta) == 'table' and meta['status'] == 'FAILURE' then
    return {-1, 'FAILURE'}
  end
end
if revoked then
  return {-1, ''}
end
""" + WRITE_META + """local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if KEYS[4] then
  redis.call('SADD', KEYS[5], ARGV[4])
  redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])
end
return {n}
"""

_stored: dict[str, Any] = {}
_revoked: dict[str, str] = {}  # revoked before it ran -> its stored end state, or ""
_attempts: dict[str, int] = {}
_lock = threading.Lock()
_scripts: dict[int, Any] = {}


def attempt_key(job_id: str) -> str:
    """Redis counter of how often a job started (see `workers.keys.attempt`)."""
    return keys.attempt(job_id)


def next_attempt(client: redis.Redis | None, job_id: str, ttl_s: int) -> int:
    """Count this start of `job_id`; 1 on the first run (and when Redis is unavailable)."""
    if client is None:
        return 1
    try:
        pipe = client.pipeline(transaction=True)
        pipe.incr(attempt_key(job_id))
        pipe.expire(attempt_key(job_id), ttl_s)
        count, _ = pipe.execute()
        return int(count)
    except (redis.RedisError, OSError) as exc:
        log.warning("attempt counter of %s unavailable: %s", job_id, exc)
        return 1


def take_stored(job_id: str) -> dict[str, Any] | None:
    """The stored SUCCESS result of `job_id` found when this run started, if any."""
    with _lock:
        stored: dict[str, Any] | None = _stored.pop(job_id, None)
    return stored


def take_revoked(job_id: str) -> str | None:
    """Revoked before this run started (`workers.delivery.revoke_store`): None if not;
    the end state already stored (REVOKED, or FAILURE for a job a producer expired: leave
    it), or "" if REVOKED is still to be stored."""
    with _lock:
        return _revoked.pop(job_id, None)


def take_attempt(job_id: str) -> int | None:
    """The attempt number counted when this run started (None: count it now)."""
    with _lock:
        return _attempts.pop(job_id, None)


def _on_prerun(task_id: str | None = None, task: Any = None, args: Any = None,
               **_: Any) -> None:
    if task is None or task_id is None or task.name not in TASK_NAMES:
        return
    try:
        if hasattr(task.backend, "client") and hasattr(task.backend, "get_key_for_task"):
            _start_in_redis(task, task_id, args)
        else:
            _start_generic(task, task_id)
    except Exception as exc:  # noqa: BLE001 - a backend hiccup must not block the job
        log.warning("could not record the start of %s: %s", task_id, exc)


def _started_meta(task: Any) -> dict[str, Any]:
    return {"pid": os.getpid(), "hostname": task.request.hostname}


# Set by `connect`: (task, job id, args) -> the start script's extra KEYS + ARGV for the
# job's running entry of `workers.metrics` (`metrics.running_entry`), or [].
_running_entry_of: Callable[[Any, str, Any], list[str]] | None = None


def _running_entry(task: Any, task_id: str, args: Any) -> list[str]:
    """KEYS and ARGV for the metrics' running entry, written by the start script in the
    same round trip as the STARTED state when our keys live in the result backend's Redis;
    else [] (`metrics.on_prerun` writes it itself: `started_with_running`).

    Crash-safety: the script is atomic, so a worker killed around it leaves either nothing
    (the job is redelivered and starts again) or the state, the attempt and the running
    entry together; a killed worker's running entries are dropped when a worker with its
    hostname starts again, as before. A job that does not run (result stored, revoked)
    gets no running entry: its `task_postrun` HDEL finds nothing, as it may anyway."""
    if _running_entry_of is None or not shares_result_redis():
        return []
    return _running_entry_of(task, task_id, args)


def shares_result_redis() -> bool:
    """True when our keys live in the result backend's Redis (LMQ_REDIS_URL unset or
    equal): writes to both can share a round trip."""
    from workers.settings import get_settings

    settings = get_settings()
    return settings.store_url == settings.backend_url


def started_with_running(task: Any) -> bool:
    """True for a task whose running entry the start script writes (`_running_entry`)."""
    return (_running_entry_of is not None and task.name in TASK_NAMES
            and hasattr(task.backend, "client")
            and hasattr(task.backend, "get_key_for_task") and shares_result_redis())


def _start_in_redis(task: Any, task_id: str, args: Any = None) -> None:
    backend = task.backend
    meta = backend._get_result_meta(result=_started_meta(task), state=states.STARTED,
                                     traceback=None, request=task.request)
    meta["task_id"] = task_id
    script = _scripts.get(id(backend.client))
    if script is None:
        script = _scripts.setdefault(id(backend.client),
                                     backend.client.register_script(START_SCRIPT))
    expires_s = int(backend.expires or 0)
    running = _running_entry(task, task_id, args)
    reply = script(keys=[backend.get_key_for_task(task_id), attempt_key(task_id),
                         keys.revoked(task_id), *running[:2]],
                   args=[backend.encode(meta), expires_s, expires_s or 7 * 24 * 3600,
                         *running[2:]])
    if int(reply[0]) == -1:
        log.info("job %s was revoked before it started: it does not run", task_id)
        stored = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        with _lock:
            _revoked[task_id] = stored
    elif int(reply[0]) == 0:
        _remember(task_id, backend.decode_result(reply[1]))
    else:
        with _lock:
            _attempts[task_id] = int(reply[0])


def _start_generic(task: Any, task_id: str) -> None:
    meta = task.backend.get_task_meta(task_id)
    if meta.get("status") == states.REVOKED:
        with _lock:
            _revoked[task_id] = states.REVOKED
        return
    _remember(task_id, meta)
    if task_id not in _stored:
        task.backend.store_result(task_id, _started_meta(task), states.STARTED,
                                  request=task.request)


def _remember(task_id: str, meta: dict[str, Any]) -> None:
    if meta.get("status") == states.SUCCESS and isinstance(meta.get("result"), dict):
        log.info("job %s already finished: returning its stored result", task_id)
        with _lock:
            _stored[task_id] = meta["result"]


def connect(app: Celery,
            running_entry: Callable[[Any, str, Any], list[str]] | None = None) -> None:
    """Install the task_prerun step (idempotent); `running_entry`: see `_running_entry`."""
    global _running_entry_of
    _running_entry_of = running_entry
    task_prerun.connect(_on_prerun, weak=False, dispatch_uid="lmq-result-store")
