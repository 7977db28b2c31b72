"""What waits in a model's Redis broker lists: per priority, and per tenant within one.

A model's jobs of one priority wait on the priority list (kombu's: the jobs without a
tenant) and on one list per tenant (`workers.celery_config.tenant_list`), whose tenants
`lmq:turns:<priority list>` names (`workers.keys.tenant_turns`). Every reader that counts
waiting jobs goes through here: the metrics, `lmq workers`, Prometheus, a job's position,
cancelling a model's queued jobs. A tenant whose list emptied may stay in the turns until
the next take: its list counts 0.
"""

from __future__ import annotations

import redis

from workers import keys
from workers.celery_config import PRIORITIES, model_priority_list, tenant_list


def tenant_lists(client: redis.Redis, model: str) -> dict[str, dict[str | None, str]]:
    """priority -> {tenant (None: no tenant): its broker list} for `model`'s queue."""
    names = {p: model_priority_list(model, p) for p in PRIORITIES}
    pipe = client.pipeline(transaction=False)
    for name in names.values():
        pipe.zrange(keys.tenant_turns(name), 0, -1)
    found: dict[str, dict[str | None, str]] = {}
    for (priority, name), tenants in zip(names.items(), pipe.execute(), strict=True):
        lists: dict[str | None, str] = {None: name}
        for raw in tenants:
            tenant = raw.decode() if isinstance(raw, bytes) else raw
            if tenant:  # "" is the no-tenant list's own turn
                lists[tenant] = tenant_list(name, tenant)
        found[priority] = lists
    return found


def counts(client: redis.Redis, model: str) -> dict[str, dict[str | None, int]]:
    """priority -> {tenant: jobs waiting} for `model` (tenants with none waiting left out,
    except None, always there)."""
    lists = tenant_lists(client, model)
    pipe = client.pipeline(transaction=False)
    for by_tenant in lists.values():
        for name in by_tenant.values():
            pipe.llen(name)
    lengths = iter(pipe.execute())
    return {priority: {tenant: n for tenant, _ in by_tenant.items()
                       if (n := int(next(lengths))) or tenant is None}
            for priority, by_tenant in lists.items()}


def all_lists(client: redis.Redis, model: str) -> list[str]:
    """Every broker list of `model`'s waiting jobs, most urgent priority first."""
    return [name for by_tenant in tenant_lists(client, model).values()
            for name in by_tenant.values()]
