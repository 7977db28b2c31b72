"""Fair shares between tenants, and the per-tenant running cap, in the worker's one atomic take.

The layout (Redis broker). Each priority list of a queue (kombu's `lmq.<model>` + sep +
step) holds the jobs without a tenant; each tenant's jobs of that queue and priority have a
list of their own, `workers.celery_config.tenant_list` (priority list + sep + tenant). The
sorted set `lmq:turns:<priority list>` (`workers.keys.tenant_turns`) names the tenants that
may have jobs waiting there, scored by their last turn (a global counter,
`workers.keys.turn_counter`); a tenant joins with score 0, so a newcomer goes next. Every
push onto a tenant's list registers the tenant in the same transaction, after the push
(`push`; `producers.publisher.push` for producers): kombu's re-publish and restore paths
in the worker (`HeldChannel._put`, `_do_restore_message`), the janitor's restores
(`workers.delivery.redelivery`).

The take (`TAKE_SCRIPT`). For each priority list it may take from, the tenant whose turn
it is, among the tenants whose list is not empty and who are under LMQ_TENANT_MAX_RUNNING
(a tenant found empty leaves the turns): the one with the least recent usage, then the
fewest jobs running or held (taken, not finished: its `lmq:tenant-running:<tenant>` set,
across every queue and priority), then the lowest score, then the oldest tail. Usage is
fair share as Slurm's fair-share factor counts it: each take adds 1 to the tenant's usage,
which halves every USAGE_HALF_LIFE_S (`workers.celery_config`; the hash
`workers.keys.turn_usage`, tenant -> "usage time", the time Redis's). So a tenant that
arrives while another's backlog fills the pool takes every take until its recent takes
catch up with the other's: 10 jobs behind 10,000 go first. Exact turns (the rule before)
gave a newcomer every other take, and so did fewest-running alone (max-min over the jobs
running now: both at about half the slots): measured 2.1x the small tenant's time alone
either way, 1.2x with usage (`ops/bench` priority). Two tenants with backlogs end up
alternating (the one whose takes are older counts a little less), and a big tenant arriving
after another has run for a while takes alone for up to about a half-life before they
alternate. The hash stays small: a usage read below 0.01 counts as none and its field is
dropped, each take also reads one field at random (so tenants gone for good go too), and
the hash expires USAGE_KEPT_HALF_LIVES half-lives after the last take.

Between the priority lists, the rule the held transport always had: the most urgent level,
one level higher when the oldest entry of any takeable tenant there waited past
LMQ_PRIORITY_AGING_S, then the older tail. So priority still wins over turns, and aging
lifts a whole priority level, while within it tenants still take turns (aging per tenant
would let a big tenant's aged backlog jump a small tenant's fresh jobs). The script then
takes the tenant's oldest entry, gives the tenant score = INCR(counter) (its turn is over),
adds 1 to its usage, adds the entry's delivery tag to `lmq:tenant-running:<tenant>` (the
tenant of its `lmq_tenant` header, which every release reads too), and books the entry in
kombu's `unacked` and the worker's held set, as `HeldQoS.append` would (an entry it cannot
read goes into `popping` instead: `workers.delivery.held_transport`). All in one script:
no job is taken out and put back to reorder them, and no booking round trip follows. The
script reads and writes keys it derives from its KEYS (tenant lists, running sets, usage): fine
on a standalone Redis (kombu's transport supports nothing else), not on Redis Cluster. Its
cost is one LINDEX, one SCARD and one HGET per tenant with waiting jobs per take, on the
priority lists that can still win (a list more than one level less urgent than the best
found so far cannot: aging lifts one level), and a plain search for each header it reads
(measured, the script alone on real Redis, three lists of 1.3 KB entries, a loaded 2-core
machine: ~50 us a take; pattern searches from each entry's start made it ~100 us).

The running sets. `lmq:tenant-running:<tenant>` holds the tags taken and not yet finished,
for every tenant (the jobs without one under the empty tenant), cap or none.
A tag leaves it when its job is acknowledged or rejected (`HeldQoS._remove_from_indices`),
put back by kombu (`HeldQoS.restore_by_tag`), not booked after the take
(`HeldChannel._deliver_taken`), or put back by the janitor after its worker died (the
held tag or the `popping` entry, `workers.delivery.redelivery`): the same transactions
that move the job, so a killed worker's count never leaks.
"""

from __future__ import annotations

import re
from typing import Any

from workers import keys
from workers.celery_config import TENANT_HEADER, USAGE_HALF_LIFE_S, message_tenant, tenant_list

# Usage hash lifetime after the last take, in half-lives: by then any usage counts
# 2^-20 of what it was (below 0.01 even after 1000 takes a second).
USAGE_KEPT_HALF_LIVES = 20

# KEYS: the n priority lists in the order to try, their n `popping` lists, their n turns
# sets, then the turn counter. ARGV: aging cutoff (epoch s, 0: none), running cap (0: none),
# the running sets' key prefix, TENANT_SEP, the n priority levels (0 = high), then, to book
# what it takes (`HeldQoS.append`'s writes), kombu's `unacked` and `unacked_index` keys, the
# worker's held set and the worker's clock (epoch s), then the queues' bells.
# Returns {index (0-based), entry, 1 if booked}; {-1} if jobs wait but every one's tenant is
# at its cap; nil if nothing waits. With nothing to take it drops the bells' tokens: they
# only wake a worker for jobs that were there, and a worker whose take finds nothing waits
# on the bells next (one token left over per job taken from a backlog cost a take and a
# BLPOP each once the queue drained: up to `keys.BELL_TOKENS_MAX` per burst).
TAKE_SCRIPT = (f"local HALF_LIFE = {USAGE_HALF_LIFE_S}\n"
               f"local KEPT_MS = {USAGE_HALF_LIFE_S * USAGE_KEPT_HALF_LIVES * 1000}\n") + """
local n = (#KEYS - 1) / 3
local cutoff, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local running, sep = ARGV[3], ARGV[4]
local capped = false
local usage_key = KEYS[3 * n + 1] .. ':usage'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

-- A tenant's recent takes, each counting half as much every HALF_LIFE seconds; below 0.01
-- (or unreadable) they count as none and the field goes, so the hash stays small.
local function usage(tenant, raw)
  if not raw then return 0 end
  local used, at = string.match(raw, '^(%S+) (%S+)$')
  local value = 0
  if used then value = (tonumber(used) or 0) * 2 ^ (-(now - (tonumber(at) or 0)) / HALF_LIFE) end
  if value < 0.01 then
    redis.call('HDEL', usage_key, tenant)
    return 0
  end
  return value
end

-- A header's value in a raw entry: a plain search for its key (the body before the headers
-- is base64, so no quote there; a pattern search from the start cost ~8 us per 1.3 KB
-- entry, the take's largest cost), then its value right after it.
local function header(entry, key, value)
  local at = string.find(entry, key, 1, true)
  if at then return string.match(entry, value, at + #key) end
  return nil  -- one value, nil: tonumber() of no value at all raises
end

local function enqueued_at(entry)
  return tonumber(header(entry, '"lmq_enqueued_at":', '^ *([0-9.eE+-]+)'))
end

-- Whether a tenant whose key is a = {usage, running, last turn, tail's enqueue time} goes
-- before one whose key is b: the least recent usage (fair share), then the fewest running,
-- then the earlier last turn, then the older tail (an unknown one never wins a tie).
local function before(a, b)
  for k = 1, 3 do
    if a[k] ~= b[k] then return a[k] < b[k] end
  end
  return a[4] ~= nil and b[4] ~= nil and a[4] < b[4]
end

-- Whose turn it is on priority list i: {list, tenant, key}, and the enqueue time of the
-- oldest tail of any takeable tenant there.
local function turn(i)
  local turns = KEYS[2 * n + i]
  local tenants = {{'', 0}}  -- the jobs without a tenant: always looked at
  local scored = redis.call('ZRANGE', turns, 0, -1, 'WITHSCORES')
  for j = 1, #scored, 2 do
    if scored[j] == '' then tenants[1][2] = tonumber(scored[j + 1])
    else tenants[#tenants + 1] = {scored[j], tonumber(scored[j + 1])} end
  end
  local pick, oldest = nil, nil
  for _, tenant in ipairs(tenants) do
    local list = KEYS[i]
    if tenant[1] ~= '' then list = list .. sep .. tenant[1] end
    local tail = redis.call('LINDEX', list, -1)
    if not tail then
      redis.call('ZREM', turns, tenant[1])  -- its next push registers it again
    else
      local busy = redis.call('SCARD', running .. tenant[1])
      if cap > 0 and busy >= cap then
        capped = true
      else
        local t = enqueued_at(tail)
        if t and (oldest == nil or t < oldest) then oldest = t end
        local used = usage(tenant[1], redis.call('HGET', usage_key, tenant[1]))
        local key = {used, busy, tenant[2], t}
        if pick == nil or before(key, pick[3]) then pick = {list, tenant[1], key} end
      end
    end
  end
  return pick, oldest
end

-- Aging lifts a list one level at most: a list whose level, so lifted, is still above
-- (less urgent than) the best found cannot win, and is not looked at (the lists come most
-- urgent first, so that skips the low lists while normal or high jobs wait).
local lift = 0
if cutoff > 0 then lift = 1 end
local best, best_i, best_level, best_t = nil, nil, nil, nil
for i = 1, n do
  local level = tonumber(ARGV[4 + i])
  if best == nil or level - lift <= best_level then
    local pick, t = turn(i)
    if pick then
      if cutoff > 0 and t and t < cutoff and level > 0 then level = level - 1 end
      if best == nil or level < best_level
          or (level == best_level and t and best_t and t < best_t) then
        best, best_i, best_level, best_t = pick, i, level, t
      end
    end
  end
end
if best == nil then
  for b = 9 + n, #ARGV do redis.call('DEL', ARGV[b]) end  -- stale wake-ups (see above)
  if capped then return {-1} end
  return false
end
local entry = redis.call('RPOP', best[1])
redis.call('ZADD', KEYS[2 * n + best_i], redis.call('INCR', KEYS[3 * n + 1]), best[2])
redis.call('HSET', usage_key, best[2], string.format('%.6f %.6f', best[3][1] + 1, now))
-- One field at random too: a tenant that never comes back is never read above.
local sample = redis.call('HRANDFIELD', usage_key, 1, 'WITHVALUES')
if sample[1] then usage(sample[1], sample[2]) end
redis.call('PEXPIRE', usage_key, KEPT_MS)  -- an idle pool's hash goes
-- Counted under the tenant its header names, as every release reads it (the same as the
-- list's, unless someone pushed the entry elsewhere by hand: then never a leak).
local tag = header(entry, '"delivery_tag":', '^ *"([^"]+)"')
local labelled = header(entry, '"lmq_tenant":', '^ *"([^"]+)"') or ''
if tag then redis.call('SADD', running .. labelled, tag) end
-- Booked as kombu books a delivery ([message, exchange, routing key] under its tag in
-- `unacked`, the tag scored by the worker's clock in `unacked_index`) and leased in the
-- worker's held set; an entry it cannot read goes into `popping`, for the worker to
-- dead-letter or book.
local unacked = ARGV[5 + n]
if unacked and tag then
  local ok, message = pcall(cjson.decode, entry)
  local properties = ok and type(message) == 'table' and message['properties']
  local info = type(properties) == 'table' and properties['delivery_info']
  if type(info) == 'table' and type(info['exchange']) == 'string'
      and type(info['routing_key']) == 'string' and properties['delivery_tag'] == tag then
    redis.call('ZADD', ARGV[6 + n], ARGV[8 + n], tag)
    redis.call('HSET', unacked, tag, '[' .. entry .. ',' .. cjson.encode(info['exchange'])
      .. ',' .. cjson.encode(info['routing_key']) .. ']')
    redis.call('SADD', ARGV[7 + n], tag)
    return {best_i - 1, entry, 1}
  end
end
redis.call('LPUSH', KEYS[n + best_i], entry)
return {best_i - 1, entry, 0}
"""

_TAG = re.compile(r'"delivery_tag": *"([^"]+)"')
_TENANT = re.compile(rf'"{TENANT_HEADER}": *"([^"]+)"')


def push(pipe: Any, priority_list: str, tenant: str | None, entry: str | bytes, *,
         leftmost: bool = False, key_prefix: str = "") -> None:
    """Queue `entry` on `tenant`'s list of `priority_list` (RPUSH: the end taken next, as
    kombu restores; LPUSH: the back, as a publish), then register the tenant's turn.

    `priority_list` carries the broker's key prefix if `pipe` does not add it (the
    janitor's plain client); `key_prefix` is that prefix, for the turns key."""
    (pipe.lpush if leftmost else pipe.rpush)(tenant_list(priority_list, tenant), entry)
    if tenant:
        turns = key_prefix + keys.tenant_turns(priority_list[len(key_prefix):])
        pipe.zadd(turns, {tenant: 0}, nx=True)


def ring(pipe: Any, queue: str, jobs: int = 1, key_prefix: str = "") -> None:
    """Wake an idle worker of `queue` (`workers.keys.bell`) for `jobs` entries the worker or
    the janitor put back, a token each, as producers do (`producers.publisher.ring`):
    without one, an idle worker takes them only after its bell wait. Not trimmed (kombu's
    prefixing pipe leaves LTRIM unprefixed): there are never more than the jobs put back,
    and an idle worker uses each up with one take."""
    pipe.lpush(key_prefix + keys.bell(queue), *["1"] * jobs)


def release(pipe: Any, tenant: str | None, tag: str, key_prefix: str = "") -> None:
    """Drop a delivery tag from its tenant's running set (its job finished or went back)."""
    pipe.srem(key_prefix + keys.tenant_running(tenant), tag)


def entry_tag_tenant(entry: str | bytes) -> tuple[str | None, str | None]:
    """(delivery tag, tenant) of a raw broker entry, found as the take script finds them
    (by pattern: the entry may be malformed)."""
    text = entry.decode(errors="replace") if isinstance(entry, bytes) else entry
    tag, tenant = _TAG.search(text), _TENANT.search(text)
    return (tag.group(1) if tag else None), (tenant.group(1) if tenant else None)


def headers_tenant(headers: Any) -> str | None:
    """The tenant in a message's headers (a kombu Message's `.headers`)."""
    return message_tenant({"headers": headers}) if isinstance(headers, dict) else None
