"""Purging a queue empties its tenants' lists too (`celery -A workers purge`).

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

from kombu.transport import redis as kombu_redis

from workers import keys
from workers.celery_config import TENANT_SEP

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


class ClientTransport(kombu_redis.Transport):
    """kombu's Redis transport with `TenantPurgeChannel` (every non-worker process)."""

    Channel = TenantPurgeChannel
