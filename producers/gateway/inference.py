"""/v1/chat/completions, /v1/completions, /v1/embeddings: one request, one job.

The request is checked (`translate`), its model asked for (`pool_access`), the job queued
through `JobQueue` like any other producer's, and the answer is the job's result in
OpenAI's format, or a server-sent event stream of its text (`sse`).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from producers.gateway import formats, image_links
from producers.gateway.auth import LOCAL, Tenant
from producers.gateway.errors import ApiError
from producers.gateway.sse import job_events
from producers.gateway.state import Gateway, GatewayDep, TenantDep
from producers.gateway.translate import job_request
from producers.gateway.waiting import ClientGone, result_unless_gone
from producers.job_building import check_limits
from producers.job_handle import JobHandle
from workers.contract import Job
from workers.error import JobCancelledError

router = APIRouter(prefix="/v1", tags=["inference"])
CLIENT_CLOSED = 499  # nginx's code for "the client closed the request": no one reads it


class _OpenAIBody(BaseModel):
    """Documented fields; any other OpenAI field is accepted and passed on to the check."""

    model_config = ConfigDict(extra="allow")
    model: str


class ChatCompletionBody(_OpenAIBody):
    messages: list[dict[str, Any]]
    stream: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None


class CompletionBody(_OpenAIBody):
    prompt: str | list[str]
    stream: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None


class EmbeddingBody(_OpenAIBody):
    input: str | list[str]
    encoding_format: str | None = None


async def _submit(gw: Gateway, job: Job, owner: Tenant, job_id: str,
                  streamed: bool) -> JobHandle:
    """Queue the job from the event loop: Redis is read in a thread only when the pool
    access check has nothing recent to go by (every SERVED_TTL_S at most). `streamed`: the
    answer is a stream (its first text is published as soon as the worker has it)."""
    if not gw.access.admits_from_cache(job.model):
        await asyncio.to_thread(gw.access.check, job.model)
    # checked=True: `translate` built the job through the SDK's config schema already, so
    # it is not checked a second time; the size limits are the one check left.
    # enqueue_anyway: checked just above, with 404 vs 503. The key names the
    # job's tenant and its priority (someone waits on an HTTP answer: the key's default,
    # normal unless it says otherwise). Without keys there is no tenant to name: the job
    # gets LMQ_TENANT's, as any producer's (none by default).
    check_limits(job, gw.settings)
    tenant = None if owner is LOCAL else owner.name
    pairs = gw.queue.prepare([job], enqueue_anyway=True, priority=owner.priority,
                             tenant=tenant, job_ids=[job_id], checked=True)
    await gw.publisher.publish(pairs, streamed=streamed)
    return gw.queue.handles(pairs)[0]


async def answer(request: Request, gw: Gateway, url: str, body: BaseModel,
                 owner: Tenant) -> Response:
    payload = body.model_dump(exclude_unset=True)
    if url == "/v1/chat/completions":
        payload = await image_links.inline_images(
            payload, gw.http, private_ok=gw.settings.gateway_fetch_private_images)
    asked = job_request(url, payload)
    job_id = str(uuid.uuid4())
    # Subscribed to the result before the job exists, so its final state arrives as a
    # message and is never read back (a streamed answer reads the fragments first and the
    # result only once they ended: no need). When the results share the broker's Redis,
    # the SUBSCRIBE need only be sent first: its confirmation is awaited after the job is
    # sent (`Results.on_broker_server`), one round trip less on the request's path.
    confirm_first = not gw.results.on_broker_server
    watch = (None if asked.stream
             else await gw.results.subscribe(job_id, confirm=confirm_first))
    try:
        handle = await _submit(gw, asked.job, owner, job_id, asked.stream)
        if watch is not None and not confirm_first:
            await gw.results.confirmed(watch)
    except BaseException:
        if watch is not None:
            gw.results.drop(watch)
        raise
    if asked.stream:
        events = job_events(handle, gw.results, asked.job.model,
                            chat=url.endswith("chat/completions"),
                            include_usage=asked.include_usage)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    try:
        result = await result_unless_gone(request, handle, gw.results, watch)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    except JobCancelledError as exc:
        raise ApiError(409, f"{exc} (cancelled while it ran)", kind="server_error",
                       code="job_cancelled") from None
    return JSONResponse(formats.response(handle.id, url, result.model_dump(mode="json")))


@router.post("/chat/completions")
async def chat_completions(request: Request, body: ChatCompletionBody,
                           gw: GatewayDep,
                           owner: TenantDep) -> Response:
    """A chat job; `stream: true` answers with server-sent chunks."""
    return await answer(request, gw, "/v1/chat/completions", body, owner)


@router.post("/completions")
async def completions(request: Request, body: CompletionBody,
                      gw: GatewayDep,
                      owner: TenantDep) -> Response:
    """A completion job (one prompt)."""
    return await answer(request, gw, "/v1/completions", body, owner)


@router.post("/embeddings")
async def embeddings(request: Request, body: EmbeddingBody, gw: GatewayDep,
                     owner: TenantDep) -> Response:
    """An embedding job: one vector per input text, as floats or base64."""
    return await answer(request, gw, "/v1/embeddings", body, owner)


@router.get("/models")
async def models(gw: GatewayDep, _owner: TenantDep) -> Any:
    """The models live workers serve now."""
    served = await asyncio.to_thread(gw.access.served)
    return {"object": "list", "data": [_model(name) for name in sorted(served)]}


@router.get("/models/{model:path}")
async def model(model: str, gw: GatewayDep,
                _owner: TenantDep) -> Any:
    served = await asyncio.to_thread(gw.access.served)
    if model not in served:
        raise ApiError(404, f"no live worker serves model {model!r}; served models: "
                       f"{', '.join(sorted(served)) or 'none'}", code="model_not_found")
    return _model(model)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "lmstudio-queue"}
