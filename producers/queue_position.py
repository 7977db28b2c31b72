"""Where a waiting job stands: the jobs ahead of it and an estimated start.

Read in Redis by one script (`POSITION_SCRIPT`), without moving anything: the model's broker
lists are walked in the order workers take them (high, normal, low; each from its tail,
the oldest entry), counting entries until the one carrying the job's id. The estimate is
the jobs ahead divided by the model's recent rate (`workers.metrics.recent_rate`: jobs it
finished per second in the last 10 minutes). Aging (LMQ_PRIORITY_AGING_S) is not modelled:
an old job may start sooner than its position says. Redis broker only.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from workers.celery_config import PRIORITIES
from workers.metrics import priority_list, recent_rate

# KEYS: the model's broker lists in the order workers take them; ARGV[1]: the job id.
# Returns {level (0-based), jobs ahead}, or {-1, jobs waiting} if the id is in none of them.
POSITION_SCRIPT = """
local ahead = 0
for i = 1, #KEYS do
  local n = redis.call('LLEN', KEYS[i])
  local stop = n - 1
  while stop >= 0 do
    local start = math.max(0, stop - 999)
    local chunk = redis.call('LRANGE', KEYS[i], start, stop)
    for j = #chunk, 1, -1 do
      if string.find(chunk[j], ARGV[1], 1, true) then
        return {i - 1, ahead + (n - 1) - (start + j - 1)}
      end
    end
    stop = start - 1
  end
  ahead = ahead + n
end
return {-1, ahead}
"""


@dataclass(frozen=True)
class JobPosition:
    """A waiting job's place: `ahead` jobs will start before it (by priority, then age)."""

    priority: str
    ahead: int
    estimated_start_s: float | None  # None: the model finished too few jobs lately to say


def position(broker: redis.Redis, store: redis.Redis, model: str,
             job_id: str) -> JobPosition | None:
    """The job's position in `model`'s queue; None if it is not waiting there (it runs, has
    finished, or is held by a worker that has not started it yet)."""
    lists = [priority_list(model, priority) for priority in PRIORITIES]
    level, ahead = broker.eval(POSITION_SCRIPT, len(lists), *lists, job_id)
    if int(level) < 0:
        return None
    rate = recent_rate(store, model)  # the workers' metrics live in the store
    estimate = int(ahead) / rate if rate else None
    return JobPosition(PRIORITIES[int(level)], int(ahead), estimate)
