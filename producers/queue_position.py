"""Where a waiting job stands: the jobs ahead of it and an estimated start.

Read in Redis by one script (`POSITION_SCRIPT`), without moving anything. A job waits on
its tenant's list of its priority (`workers.celery_config.tenant_list`; the registry
records both). Ahead of it, in the order workers take jobs (`workers.delivery.tenant_turns`):

* every job waiting at a higher priority, whatever its tenant (each also counts as one
  more take of its tenant's recent usage, as the take adds it);
* the `p` jobs ahead of it on its own list (each list is taken from its tail, the oldest);
* at its priority, the other tenants' takes before the job's tenant has taken p + 1: the
  take's fair share replayed from the usage now (`workers.keys.turn_usage`, decayed to
  Redis's clock by USAGE_HALF_LIFE_S), the running counts and the turn scores. Each take
  goes to the tenant with the least (usage, running, last turn), then the older tail, adds
  1 to its usage and makes its turn the latest. So tenant j's k-th take (usage u_j + k)
  comes before the job's tenant's p-th (u + p) if its usage is lower, or equal with fewer
  running, or equal with as many running and either k < p (j started with more usage: each
  of its takes follows a turn earlier than the matching one of the job's tenant) or k = p
  and j's turn score, then its tail, is the earlier now. Counted per tenant, no loop per
  job: min(its waiting jobs, that count); it agrees with a take-by-take replay of the rule.

The script's work: a scan of the job's own list for its id (1000 entries a read), then a
few reads per tenant waiting at its priority and one LLEN per higher list.

The estimate is the jobs ahead divided by the model's recent rate
(`workers.metrics.recent_rate`: jobs it finished per second in the last 10 minutes). Not
modelled: the usage's decay while the jobs ahead run (over many half-lives it tilts the
order toward the tenant that took less long ago), takes of other models' queues (usage is
per tenant across every queue), running counts changing as jobs start and finish, aging
(LMQ_PRIORITY_AGING_S: an old job may start sooner than its position says), the per-tenant
running cap (a capped tenant's jobs wait longer, others' sooner), and jobs that arrive
later at a higher priority or from a tenant with no jobs waiting now. Redis broker only.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from workers import keys, waiting
from workers.celery_config import PRIORITIES, USAGE_HALF_LIFE_S, tenant_list
from workers.metrics import recent_rate

# KEYS: the job's own list, the turns set of its priority list, the usage hash, the m
# other tenants' lists at its priority, then every list of the higher priorities. ARGV: the
# job id, its tenant ("" for none), the running sets' key prefix, m, the m other tenants
# (as in the turns set; "" for none), then the tenant of each higher list.
# Returns the jobs ahead, or -1 if the id is not on its list.
POSITION_SCRIPT = f"local HALF_LIFE = {USAGE_HALF_LIFE_S}\n" + """
local id, mine, running, m = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
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
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

-- As the take reads it: recent usage decayed to now (below 0.01: none).
local function usage(tenant)
  local raw = redis.call('HGET', KEYS[3], tenant)
  if not raw then return 0 end
  local used, at = string.match(raw, '^(%S+) (%S+)$')
  if not used then return 0 end
  local age = math.max(0, now - (tonumber(at) or 0))  -- a clock set back: no growth
  local value = (tonumber(used) or 0) * 2 ^ (-age / HALF_LIFE)
  if value < 0.01 then return 0 end
  return value
end

local function enqueued_at(list)
  local tail = redis.call('LINDEX', list, -1)
  if not tail then return nil end
  local at = string.find(tail, '"lmq_enqueued_at":', 1, true)
  if not at then return nil end
  return tonumber(string.match(tail, '^ *([0-9.eE+-]+)', at + 18))
end

-- The higher priorities go first, each job one more take of its tenant's usage.
local ahead, higher = p, {}
for j = 4 + m, #KEYS do
  local waiting = redis.call('LLEN', KEYS[j])
  local tenant = ARGV[j + 1]
  ahead = ahead + waiting
  higher[tenant] = (higher[tenant] or 0) + waiting
end

local function state(tenant, list)
  return {u = usage(tenant) + (higher[tenant] or 0), r = redis.call('SCARD', running .. tenant),
          s = tonumber(redis.call('ZSCORE', KEYS[2], tenant) or 0), t = enqueued_at(list),
          name = tenant}
end

-- Whether b's first take goes before a's when both have the same usage and running count:
-- the earlier turn, then the older tail (unknown: neither), then the take's reading order
-- (the jobs without a tenant first, then the turns set's order).
local function first_before(b, a)
  if b.s ~= a.s then return b.s < a.s end
  if b.t and a.t and b.t ~= a.t then return b.t < a.t end
  if b.name == '' or a.name == '' then return b.name == '' end
  return b.name < a.name
end

local me = state(mine, KEYS[1])
local level = me.u + p  -- usage at the job's take
for j = 1, m do
  local other = state(ARGV[4 + j], KEYS[3 + j])
  -- its takes k = 0, 1, ... at usage other.u + k: those below the job's level go first
  local k = math.max(0, math.ceil(level - other.u))  -- then a rounding step either way
  if k > 0 and other.u + k - 1 >= level then k = k - 1 end
  if other.u + k < level then k = k + 1 end
  if other.u + k == level and (other.r < me.r or (other.r == me.r
      and (k < p or (k == p and first_before(other, me))))) then
    k = k + 1
  end
  ahead = ahead + math.min(redis.call('LLEN', KEYS[3 + j]), k)
end
return ahead
"""


@dataclass(frozen=True)
class JobPosition:
    """A waiting job's place: about `ahead` jobs will start before it (by priority, then
    the tenants' fair share)."""

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
    higher = [(t, name) for p in PRIORITIES[:level] for t, name in lists[p].items()]
    keys_ = [tenant_list(same[None], tenant), keys.tenant_turns(same[None]),
             keys.turn_usage(), *(same[t] for t in others), *(name for _, name in higher)]
    ahead = int(broker.eval(POSITION_SCRIPT, len(keys_), *keys_, job_id, tenant or "",
                            keys.tenant_running(None), len(others),
                            *(t or "" for t in others), *(t or "" for t, _ in higher)))
    if ahead < 0:
        return None
    rate = recent_rate(store, model)  # the workers' metrics live in the store
    estimate = ahead / rate if rate else None
    return JobPosition(priority, ahead, estimate)
