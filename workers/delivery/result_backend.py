"""The worker's Redis result backend: a state write is one script, not a GET then a write.

Celery's `BaseKeyValueStoreBackend._store_result` reads the stored meta (GET) so that a
SUCCESS is never overwritten (a lost worker's duplicate run), then writes the new meta
(SETEX + PUBLISH in a MULTI): two round trips for every final state. `StateScriptBackend`
does the same in one Lua script (`STORE_SCRIPT`), atomic, so nothing can land between the
check and the write. Same key, value, expiry (`result_expires`, `result_failure_expires`
for FAILURE) and PUBLISH on the key's channel, the message producers' result consumers and
the gateway's result feed listen to.

It keeps two finished states: a stored SUCCESS is never overwritten (Celery's rule), and a
stored REVOKED only by another REVOKED (issue 20: a cancelled job never ends otherwise; a
job cancelled while it ran stores its REVOKED with the partial result over a REVOKED
stored for it before). Other states (STARTED, PROGRESS, FAILURE, RETRY) are overwritten
as Celery does.

The writes that end a job (its stream's end, its metrics) ride in the final state's round
trip (`workers.delivery.job_finish`).

Selected by `workers.celery` for redis:// and rediss:// result backends (the worker,
Flower and `celery -A workers ...`); producers build their own app with Celery's backend.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError

from workers import redis_pool
from workers.delivery import job_finish, result_store

# KEYS: the result key. ARGV: the encoded meta, its expiry in seconds (0: none), its state.
STORE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' then
    local stored = meta['status']
    if stored == 'SUCCESS' or (stored == 'REVOKED' and ARGV[3] ~= 'REVOKED') then
      return 0
    end
  end
end
""" + result_store.WRITE_META + """return 1
"""

SCHEMES = ("redis://", "rediss://")


class StateScriptBackend(RedisBackend):  # type: ignore[misc]  # celery is untyped
    """Celery's Redis backend whose task state write is `STORE_SCRIPT` (one round trip)."""

    def __init__(self, *args: Any, url: str | None = None, app: Any = None,
                 **kwargs: Any) -> None:
        # Chosen as the app's backend class, Celery passes no URL: the configured one.
        kwargs.setdefault("connection_pool", redis_pool.YieldingConnectionPool)
        super().__init__(*args, url=url or app.conf.result_backend, app=app, **kwargs)
        self._store_script: Any = None

    def _store_result(self, task_id: Any, result: Any, state: str, traceback: Any = None,
                      request: Any = None, **kwargs: Any) -> Any:
        meta = self._get_result_meta(result=result, state=state, traceback=traceback,
                                     request=request)
        meta["task_id"] = task_id.decode() if isinstance(task_id, bytes) else task_id
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state,
                                    task_id=task_id)
        expires = self.failure_expires if state == states.FAILURE else self.expires
        riders = (job_finish.take(meta["task_id"])
                  if state in states.READY_STATES and result_store.shares_result_redis() else [])
        self.ensure(self._run_store, (self.get_key_for_task(task_id), value,
                                      int(expires or 0), state, riders, result))
        return result

    def _run_store(self, key: Any, value: Any, expires_s: int, state: str,
                   riders: list[job_finish.Rider], result: Any) -> Any:
        if self._store_script is None:
            self._store_script = self.client.register_script(STORE_SCRIPT)
        store = (self._store_script, [key], [value, expires_s, state])
        if not riders:
            return self._store_script(keys=store[1], args=store[2])
        sending, riders[:] = list(riders), []  # a retry after a lost connection: state only
        return job_finish.send(self.client, store, sending, state, result)


def backend_class(result_backend: str | None) -> type | None:
    """`StateScriptBackend` for a Redis result backend URL, else None (Celery's choice)."""
    if isinstance(result_backend, str) and result_backend.startswith(SCHEMES):
        return StateScriptBackend
    return None
