"""Purging a queue empties its tenants' lists too (`celery -A workers purge`); a task sent
onto a job queue with Celery's API rings the queue's bell.

kombu's Redis purge deletes a queue's priority lists. Jobs with a tenant wait on lists of
their own next to them (`workers.celery_config.tenant_list`), which kombu does not know:
left there, a purged queue's jobs would still run. `TenantPurgeChannel._purge` deletes, in
one script, each priority list, the lists of the tenants its turns set names
(`workers.delivery.tenant_turns`) and the turns set itself, and returns the jobs deleted.
One script, so a producer's push cannot land between reading the turns set and deleting
it (its tenant would then be missing from the turns, its job never taken). Jobs already
taken by a worker are not touched, as with kombu's purge.

Every process on a `redis://` or `rediss://` broker uses `ClientTransport`
(`workers.celery_config`); workers replace it with the held transport, whose channel purges
the same way.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

from workers import keys
from workers.celery_config import TENANT_SEP
from workers.contract import model_from_queue

# KEYS: the n priority lists of a queue, then their n turns sets. ARGV: TENANT_SEP.
# Returns the number of jobs deleted.
PURGE_SCRIPT = """
local n = #KEYS / 2
local purged = 0
for i = 1, n do
  local lists = {KEYS[i]}
  for _, tenant in ipairs(redis.call('ZRANGE', KEYS[n + i], 0, -1)) do
    if tenant ~= '' then lists[#lists + 1] = KEYS[i] .. ARGV[1] .. tenant end
  end
  for _, list in ipairs(lists) do
    purged = purged + redis.call('LLEN', list)
    redis.call('DEL', list)
  end
  redis.call('DEL', KEYS[n + i])
end
return purged
"""


class TenantPurgeChannel(kombu_redis.Channel):
    """kombu's Redis channel whose purge also deletes the queue's tenant lists."""

    def _purge(self, queue: str) -> int:
        names = [self._q_for_pri(queue, step) for step in self.priority_steps]  # type: ignore[no-untyped-call]
        prefix = self.global_keyprefix  # EVAL's keys are not prefixed by kombu's client
        keys_ = ([prefix + name for name in names]
                 + [prefix + keys.tenant_turns(name) for name in names])
        with self.conn_or_acquire() as client:
            return int(client.eval(PURGE_SCRIPT, len(keys_), *keys_, TENANT_SEP))


class ClientChannel(TenantPurgeChannel):
    """Every non-worker process's channel: it purges tenants' lists, and a publish onto a
    job queue rings its bell (workers publish with the held transport's own rules)."""

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's publish. A task sent with Celery's own API (`app.send_task`) onto a job
        queue also wakes an idle worker of it (`workers.keys.bell`), as `JobQueue`'s
        publisher does: else the worker takes it only after its bell wait."""
        batch = kwargs.get("_publish_batch")  # kombu's batched publish, if one is open
        super()._put(queue, message, **kwargs)  # type: ignore[no-untyped-call]
        if model_from_queue(queue) is None:
            return
        bell = keys.bell(queue)  # kombu's client prefixes LPUSH's key, not LTRIM's:
        trim = (self.global_keyprefix + bell, 0, keys.BELL_TOKENS_MAX - 1)
        if batch is not None:  # after the message, in the batch's pipeline
            batch.add("lpush", bell, "1")
            batch.add("ltrim", *trim)
            return
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            pipe.lpush(bell, "1")
            pipe.ltrim(*trim)
            pipe.execute()


class ClientTransport(kombu_redis.Transport):
    """kombu's Redis transport with `ClientChannel` (every non-worker process)."""

    Channel = ClientChannel
