"""/v1/files: batch input files, validated line by line at upload (`batch_input`: a file
with a bad line is refused, the validated jobs are kept next to its bytes), and the output
and error files of finished batches."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response

from producers.gateway import batch_input
from producers.gateway.auth import Tenant
from producers.gateway.errors import bad_request, not_found
from producers.gateway.records import new_id, now
from producers.gateway.state import Gateway, GatewayDep, TenantDep

router = APIRouter(prefix="/v1/files", tags=["files"])
SHOWN_LINE_ERRORS = 10
MAX_FILE_BYTES = 200 * 1024 * 1024  # OpenAI's limit for a batch input file


def file_object(file_id: str, filename: str, size: int, purpose: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": now(),
            "filename": filename, "purpose": purpose, "status": "processed",
            "expires_at": None, "status_details": None}


def store_file(gw: Gateway, owner: Tenant, content: bytes, filename: str,
               purpose: str, **extra: bytes) -> dict[str, Any]:
    """`extra`: more fields of the file's record (a batch input file's `requests`)."""
    record = file_object(new_id("file"), filename, len(content), purpose)
    gw.files.put(record["id"], record, owner.name, content=content, **extra)
    return record


@router.post("")
async def upload(file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()],
                 gw: GatewayDep, owner: TenantDep) -> Any:
    """Upload a batch input file (purpose `batch`): every line is checked before it is kept."""
    if purpose != "batch":
        raise bad_request(f"purpose must be 'batch' (this gateway keeps batch input files), "
                          f"not {purpose!r}", "purpose")
    if (file.size or 0) > MAX_FILE_BYTES:
        raise bad_request(f"the file has {file.size} bytes, more than a batch input file may "
                          f"({MAX_FILE_BYTES} bytes): split it", "file")
    content = await file.read()

    def kept() -> dict[str, Any]:
        validation = batch_input.validated(content, gw.settings)
        if not validation.ok:
            lines = validation.report(limit=SHOWN_LINE_ERRORS).splitlines()
            raise bad_request("the file has bad lines, nothing was kept: " + "; ".join(lines),
                              "file")
        return store_file(gw, owner, content, file.filename or "input", purpose,
                          requests=batch_input.pack(validation.requests))

    return await asyncio.to_thread(kept)


@router.get("")
async def list_files(gw: GatewayDep, owner: TenantDep, purpose: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
                     after: str | None = None) -> Any:
    page, more = gw.files.newest(owner.name, after, limit)
    data = [f for f in page if purpose is None or f["purpose"] == purpose]
    return {"object": "list", "data": data, "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def owned_file(gw: Gateway, file_id: str, owner: Tenant) -> dict[str, Any]:
    record = gw.files.get(file_id, owner.name)
    if record is None:
        raise not_found(f"no file {file_id!r} (unknown id, or it expired)")
    return record


@router.get("/{file_id}")
async def retrieve(file_id: str, gw: GatewayDep,
                   owner: TenantDep) -> Any:
    return owned_file(gw, file_id, owner)


@router.get("/{file_id}/content")
async def content(file_id: str, gw: GatewayDep,
                  owner: TenantDep) -> Response:
    owned_file(gw, file_id, owner)
    return Response(gw.files.field(file_id, "content") or b"",
                    media_type="application/jsonl")


@router.delete("/{file_id}")
async def delete(file_id: str, gw: GatewayDep,
                 owner: TenantDep) -> Any:
    owned_file(gw, file_id, owner)
    gw.files.delete(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
