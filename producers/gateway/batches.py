"""/v1/batches: create, retrieve, list (newest first, paginated), cancel.

Routes only read records and ask for work: the background loop (`batch_advancer`) does the
validating, enqueueing, counting and finalizing, so a GET costs two Redis reads however big
the batch is.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request

from producers.gateway import batch_lifecycle
from producers.gateway.auth import Tenant
from producers.gateway.batch_advancer import BatchAdvancer
from producers.gateway.errors import not_found
from producers.gateway.state import Gateway, GatewayDep, TenantDep

router = APIRouter(prefix="/v1/batches", tags=["batches"])

CREATE_EXAMPLE = {"input_file_id": "file-abc", "endpoint": "/v1/chat/completions",
                  "completion_window": "24h", "metadata": {"job": "nightly"}}


async def advancer(request: Request) -> BatchAdvancer:  # async: no thread hop (state.py)
    found: BatchAdvancer = request.app.state.batch_advancer
    return found


AdvancerDep = Annotated[BatchAdvancer, Depends(advancer)]


def owned_batch(gw: Gateway, batch_id: str, owner: Tenant) -> dict[str, Any]:
    record = gw.batches.get(batch_id, owner.name)
    if record is None:
        raise not_found(f"no batch {batch_id!r} (unknown id, or it expired)")
    return record


@router.post("")
async def create(body: Annotated[dict[str, Any], Body(examples=[CREATE_EXAMPLE])],
                 gw: GatewayDep, owner: TenantDep, loop: AdvancerDep) -> Any:
    """A new batch, `validating`: its lines are checked and enqueued in the background."""
    record = await asyncio.to_thread(batch_lifecycle.create, gw, owner, body)
    loop.poke()
    return record


@router.get("/{batch_id}")
async def retrieve(batch_id: str, gw: GatewayDep, owner: TenantDep) -> Any:
    def shown() -> dict[str, Any]:
        return batch_lifecycle.shown(gw, owned_batch(gw, batch_id, owner))

    return await asyncio.to_thread(shown)


@router.get("")
async def list_batches(gw: GatewayDep, owner: TenantDep,
                       limit: Annotated[int, Query(ge=1, le=100)] = 20,
                       after: str | None = None) -> Any:
    def page() -> tuple[list[dict[str, Any]], bool]:
        records, more = gw.batches.newest(owner.name, after, limit)
        return [batch_lifecycle.shown(gw, r) for r in records], more

    data, more = await asyncio.to_thread(page)
    return {"object": "list", "data": data, "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


@router.post("/{batch_id}/cancel")
async def cancel(batch_id: str, gw: GatewayDep, owner: TenantDep, loop: AdvancerDep) -> Any:
    """`cancelling` at once; the loop revokes what has not finished, then `cancelled`."""
    def asked() -> dict[str, Any]:
        return batch_lifecycle.request_cancel(gw, owned_batch(gw, batch_id, owner))

    record = await asyncio.to_thread(asked)
    loop.poke()
    return record
