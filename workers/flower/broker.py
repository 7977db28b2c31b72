"""Flower's Broker page (and `/api/queues/length`) counts the tenants' lists too.

Flower reads a Redis queue's length as the LLEN of its priority lists. Jobs with a tenant
wait on lists of their own next to them (`workers.celery_config.tenant_list`), named by the
priority list's turns set (`workers.delivery.tenant_turns`): Flower showed none of them.
`queues` replaces Flower's `RedisBase.queues` (every Redis broker class of Flower) and adds
them, read in one script so a take between reads cannot count a job twice or not at all.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from workers import keys
from workers.celery_config import CLIENT_TRANSPORT, TENANT_SEP

# KEYS: for each queue, its s priority lists, then their s turns sets. ARGV: TENANT_SEP, s.
# Returns each queue's waiting jobs.
LENGTHS_SCRIPT = """
local sep, s = ARGV[1], tonumber(ARGV[2])
local counts = {}
for base = 0, #KEYS - 1, 2 * s do
  local total = 0
  for i = 1, s do
    local list = KEYS[base + i]
    total = total + redis.call('LLEN', list)
    for _, tenant in ipairs(redis.call('ZRANGE', KEYS[base + s + i], 0, -1)) do
      if tenant ~= '' then total = total + redis.call('LLEN', list .. sep .. tenant) end
    end
  end
  counts[#counts + 1] = total
end
return counts
"""


async def queues(self: Any, names: Any) -> list[dict[str, Any]]:
    """Flower's `RedisBase.queues` ([{name, messages}]), with the tenant lists counted."""
    names = list(names)
    prefix, steps = self.broker_prefix, list(self.priority_steps)
    keys_: list[str] = []
    for name in names:
        lists = [self._q_for_pri(name, step) for step in steps]
        keys_ += [prefix + key for key in lists]
        keys_ += [prefix + keys.tenant_turns(key) for key in lists]
    try:
        counts = (await self.redis.eval(LENGTHS_SCRIPT, len(keys_), *keys_, TENANT_SEP,
                                        len(steps))) if names and steps else []
        return [{"name": name, "messages": int(count)}
                for name, count in zip(names, counts, strict=True)]
    finally:  # as Flower's own: one client per request
        if hasattr(self.redis, "aclose"):
            await self.redis.aclose()
        else:
            await self.redis.close()


def install(app: Celery) -> None:
    """Count tenant lists in Flower's queue lengths. Flower also picks its broker class by
    the scheme of the app connection's URL, which names the transport class when one is
    set: Flower keeps kombu's (it never purges, what `CLIENT_TRANSPORT` is for)."""
    from flower.utils import broker

    broker.RedisBase.queues = queues
    if app.conf.broker_transport == CLIENT_TRANSPORT:
        app.conf.broker_transport = None
