"""Lua scripts of the weighted semaphore (see `semaphore` for the data model and rules).

Every script takes the group's key prefix as KEYS[1] and derives its keys from it (the
wake lists are per ticket, so they cannot all be declared up front; a Redis Cluster would
need a hash tag in the group name). Time is Redis's own clock (`TIME`), so workers on
hosts with skewed clocks agree on lease expiry.
"""

from __future__ import annotations

# Shared helpers; each script below is COMMON + its body.
COMMON = r"""
local P = KEYS[1]
local INFO, EXP, HELD = P .. ':info', P .. ':exp', P .. ':held'
local QUEUE, BYPASS, META, SEQ = P .. ':queue', P .. ':bypass', P .. ':meta', P .. ':seq'

-- A high-priority ticket's queue score is its arrival minus this: ahead of every other
-- (scores stay exact integers in a double up to 2^53).
local HIGH_AHEAD = 1099511627776  -- 2^40

local function wake_key(id) return P .. ':wake:' .. id end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function drop(id)
  redis.call('ZREM', HELD, id)
  redis.call('ZREM', QUEUE, id)
  redis.call('ZREM', EXP, id)
  redis.call('HDEL', INFO, id)
  redis.call('HDEL', BYPASS, id)
end

local function purge(now)
  local dead = redis.call('ZRANGEBYSCORE', EXP, '-inf', now)
  for _, id in ipairs(dead) do
    drop(id)
    redis.call('DEL', wake_key(id))
  end
  return #dead
end

local function decode(id)
  local raw = redis.call('HGET', INFO, id)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function usage()
  local u = {weights = {}, weights_total = 0, kv = 0, slots = {}}
  for _, id in ipairs(redis.call('ZRANGE', HELD, 0, -1)) do
    local t = decode(id)
    if t == nil then
      redis.call('ZREM', HELD, id)
    elseif t.k == 'load' then
      u.weights[t.m] = math.max(u.weights[t.m] or 0, t.b)
    else
      u.kv = u.kv + t.b
      u.slots[t.m] = (u.slots[t.m] or 0) + 1
    end
  end
  for _, b in pairs(u.weights) do u.weights_total = u.weights_total + b end
  return u
end

local function notify(id, msg, ttl_ms)
  redis.call('RPUSH', wake_key(id), msg)
  redis.call('PEXPIRE', wake_key(id), ttl_ms)
end

local function take(u, t, id, now)
  redis.call('ZREM', QUEUE, id)
  redis.call('ZADD', HELD, now, id)
  redis.call('HDEL', BYPASS, id)
  if t.k == 'load' then
    local old = u.weights[t.m] or 0
    if t.b > old then
      u.weights[t.m] = t.b
      u.weights_total = u.weights_total + t.b - old
    end
  else
    u.kv = u.kv + t.b
    u.slots[t.m] = (u.slots[t.m] or 0) + 1
  end
end

-- Admit waiting tickets in queue order: high first, then arrival (semaphore.py's docstring).
local function grant(budget, max_bypass, ttl_ms, now)
  local u = usage()
  local waiting_for_memory = {}
  local held_back = false
  for _, id in ipairs(redis.call('ZRANGE', QUEUE, 0, -1)) do
    local t = decode(id)
    if t == nil then
      redis.call('ZREM', QUEUE, id)
    else
      local room = budget - u.weights_total
      if budget < 0 then room = math.huge end  -- host memory unknown: slots only
      local free = room - u.kv
      local need = t.b
      if t.k == 'load' then need = math.max(0, t.b - (u.weights[t.m] or 0)) end
      if t.k == 'job' and need > room then
        notify(id, 'no|' .. need .. '|' .. room .. '|' .. budget .. '|' .. u.weights_total, ttl_ms)
        drop(id)
      else
        local slot_ok = t.k == 'load' or (u.slots[t.m] or 0) < t.s
        if need <= free and slot_ok and not held_back then
          take(u, t, id, now)
          notify(id, 'ok', ttl_ms)
          for _, earlier in ipairs(waiting_for_memory) do
            redis.call('HINCRBY', BYPASS, earlier, 1)
          end
        elseif need <= room then
          if slot_ok and need > free then
            table.insert(waiting_for_memory, id)
          end
          local passed = tonumber(redis.call('HGET', BYPASS, id) or '0')
          if passed >= max_bypass then held_back = true end
        end
      end
    end
  end
  if budget < 0 then return -1 end
  return budget - u.weights_total - u.kv
end

local function next_expiry_in(now)
  local first = redis.call('ZRANGE', EXP, 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return math.max(0, tonumber(first[2]) - now)
end

local function settle(id, budget, max_bypass, ttl_ms, now)
  local free = grant(budget, max_bypass, ttl_ms, now)
  local msg = false
  if id ~= '' then msg = redis.call('LPOP', wake_key(id)) end
  if not msg then
    if id ~= '' and not redis.call('ZSCORE', QUEUE, id) then
      msg = redis.call('ZSCORE', HELD, id) and 'ok' or 'lost'
    else
      msg = 'wait'
    end
  end
  return {msg, next_expiry_in(now), free}
end
"""

# KEYS[1]=prefix; ARGV: id, info json, budget, ttl_ms, max_bypass, high ("1": queued ahead
# of every normal and low ticket; absent from older workers: in arrival order).
ACQUIRE = (
    COMMON
    + r"""
local id, budget = ARGV[1], tonumber(ARGV[3])
local ttl_ms, max_bypass = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
purge(now)
redis.call('HSET', META, 'budget_bytes', budget, 'updated_ms', now)
redis.call('HSET', INFO, id, ARGV[2])
redis.call('ZADD', EXP, now + ttl_ms, id)
local seq = redis.call('INCR', SEQ)
if ARGV[6] == '1' then seq = seq - HIGH_AHEAD end
redis.call('ZADD', QUEUE, seq, id)
return settle(id, budget, max_bypass, ttl_ms, now)
"""
)

# KEYS[1]=prefix; ARGV: id, budget, ttl_ms, max_bypass.
POLL = (
    COMMON
    + r"""
local now = now_ms()
purge(now)
return settle(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[3]), now)
"""
)

# KEYS[1]=prefix; ARGV: budget, ttl_ms, max_bypass, ids... (held or waiting: both dropped).
RELEASE = (
    COMMON
    + r"""
local now = now_ms()
for i = 4, #ARGV do
  drop(ARGV[i])
  redis.call('DEL', wake_key(ARGV[i]))
end
purge(now)
return settle('', tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[2]), now)
"""
)

# KEYS[1]=prefix; ARGV: budget, ttl_ms, max_bypass, ids... Returns the ids no longer known.
RENEW = (
    COMMON
    + r"""
local now = now_ms()
local ttl_ms = tonumber(ARGV[2])
local missing = {}
for i = 4, #ARGV do
  if redis.call('ZSCORE', EXP, ARGV[i]) then
    redis.call('ZADD', EXP, now + ttl_ms, ARGV[i])
  else
    table.insert(missing, ARGV[i])
  end
end
if purge(now) > 0 then grant(tonumber(ARGV[1]), tonumber(ARGV[3]), ttl_ms, now) end
return missing
"""
)
