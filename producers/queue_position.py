"""Where a waiting job stands: the jobs ahead of it and an estimated start.

Read in Redis by one script (`POSITION_SCRIPT`), without moving anything. A job waits on
its tenant's list of its priority (`workers.celery_config.tenant_list`; the registry
records both). Ahead of it, in the order workers take jobs (`workers.delivery.tenant_turns`):

* every job waiting at a higher priority, whatever its tenant;
* the `p` jobs ahead of it on its own list (each list is taken from its tail, the oldest);
* at its priority, for each other tenant, the turns that tenant gets before the job's:
  min(its waiting jobs, p), plus one if its turn in the current round comes first (a
  lower or equal score in `lmq:turns:<priority list>`).

The estimate is the jobs ahead divided by the model's recent rate
(`workers.metrics.recent_rate`: jobs it finished per second in the last 10 minutes). Not
modelled: aging (LMQ_PRIORITY_AGING_S: an old job may start sooner than its position says),
the per-tenant running cap (a capped tenant's jobs wait longer, others' sooner), and jobs
of the model that arrive later at a higher priority or from a tenant with no jobs waiting
now. Redis broker only.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from workers import keys, waiting
from workers.celery_config import PRIORITIES, tenant_list
from workers.metrics import recent_rate

# KEYS: the job's own list, the turns set of its priority list, the m other tenants' lists
# at its priority, then every list of the higher priorities. ARGV: the job id, its tenant
# ("" for none), m, then the m other tenants (as in the turns set; "" for none).
# Returns the jobs ahead, or -1 if the id is not on its list.
POSITION_SCRIPT = """
local id, mine, m = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = redis.call('LLEN', KEYS[1])
local p, stop = nil, n - 1
while stop >= 0 and p == nil do
  local start = math.max(0, stop - 999)
  local chunk = redis.call('LRANGE', KEYS[1], start, stop)
  for j = #chunk, 1, -1 do
    if string.find(chunk[j], id, 1, true) then
      p = (n - 1) - (start + j - 1)
      break
    end
  end
  stop = start - 1
end
if p == nil then return -1 end
local my_score = tonumber(redis.call('ZSCORE', KEYS[2], mine) or 0)
local ahead = p
for j = 1, m do
  local turns = p
  if tonumber(redis.call('ZSCORE', KEYS[2], ARGV[3 + j]) or 0) <= my_score then
    turns = p + 1
  end
  ahead = ahead + math.min(redis.call('LLEN', KEYS[2 + j]), turns)
end
for j = 3 + m, #KEYS do ahead = ahead + redis.call('LLEN', KEYS[j]) end
return ahead
"""


@dataclass(frozen=True)
class JobPosition:
    """A waiting job's place: about `ahead` jobs will start before it (by priority, then
    tenant turns)."""

    priority: str
    ahead: int
    estimated_start_s: float | None  # None: the model finished too few jobs lately to say


def position(broker: redis.Redis, store: redis.Redis, model: str, job_id: str,
             priority: str = "normal", tenant: str | None = None) -> JobPosition | None:
    """The job's position in `model`'s queue (its `priority` and `tenant` as submitted);
    None if it is not waiting there (it runs, has finished, or is held by a worker that
    has not started it yet)."""
    lists = waiting.tenant_lists(broker, model)
    level = PRIORITIES.index(priority)
    same = lists[priority]
    others = [t for t in same if t != tenant]
    higher = [name for p in PRIORITIES[:level] for name in lists[p].values()]
    keys_ = [tenant_list(same[None], tenant),
             keys.tenant_turns(same[None]), *(same[t] for t in others), *higher]
    ahead = int(broker.eval(POSITION_SCRIPT, len(keys_), *keys_, job_id, tenant or "",
                            len(others), *(t or "" for t in others)))
    if ahead < 0:
        return None
    rate = recent_rate(store, model)  # the workers' metrics live in the store
    estimate = ahead / rate if rate else None
    return JobPosition(priority, ahead, estimate)

