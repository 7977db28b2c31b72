"""What every route reaches through `request.app.state.gateway`: the pool, keys, records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request

from producers.async_publisher import AsyncPublisher
from producers.gateway import image_links
from producers.gateway.auth import KeyRing, Tenant
from producers.gateway.errors import ApiError
from producers.gateway.pool_access import PoolAccess
from producers.gateway.records import Records
from producers.gateway.waiting import Results
from producers.job_queue import JobQueue
from workers.settings import Settings


@dataclass
class Gateway:
    settings: Settings
    queue: JobQueue
    publisher: AsyncPublisher  # the requests' jobs, sent from the event loop
    access: PoolAccess
    keyring: KeyRing
    files: Records
    batches: Records
    results: Results  # every request's result wait, on one shared Redis client
    http: httpx.AsyncClient  # downloads of images given as links

    @classmethod
    def open(cls, settings: Settings, keyring: KeyRing) -> Gateway:
        queue = JobQueue(settings)
        ttl_s = settings.result_expires_s
        return cls(settings, queue, AsyncPublisher(queue.publisher), PoolAccess(queue), keyring,
                   Records(queue.store_client, "file", ttl_s),
                   Records(queue.store_client, "batch", ttl_s),
                   Results(queue.app, settings.backend_url, settings.broker_url),
                   image_links.client())

    async def aclose(self) -> None:
        await self.results.aclose()
        await self.publisher.aclose()
        await self.http.aclose()
        self.access.close()
        self.queue.close()


# The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency on a
# worker thread, two thread hops per request for a dict lookup and a hash (measured: under
# CPU contention each hop costs a scheduler wake-up of the gateway process).
async def gateway(request: Request) -> Gateway:
    found: Gateway = request.app.state.gateway
    return found


GatewayDep = Annotated[Gateway, Depends(gateway)]


async def tenant(request: Request, gw: GatewayDep) -> Tenant:
    """The caller's tenant from `Authorization: Bearer`; 401 for a missing or wrong key."""
    found = gw.keyring.tenant(request.headers.get("authorization"))
    if found is None:
        raise ApiError(401, "missing or unknown API key: send `Authorization: Bearer <key>` "
                       "with a key from LMQ_API_KEYS", code="invalid_api_key")
    return found


TenantDep = Annotated[Tenant, Depends(tenant)]
