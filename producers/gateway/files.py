"""/v1/files: batch input files, validated line by line as `lmq batch` does, and the output
and error files of finished batches."""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response

from producers.batch import Validation, validate_file
from producers.gateway import tool_choice
from producers.gateway.auth import Tenant
from producers.gateway.errors import ApiError, bad_request, not_found
from producers.gateway.records import new_id, now
from producers.gateway.state import Gateway, GatewayDep, TenantDep
from workers.contract import ChatJob

router = APIRouter(prefix="/v1/files", tags=["files"])
SHOWN_LINE_ERRORS = 10
MAX_FILE_BYTES = 200 * 1024 * 1024  # OpenAI's limit for a batch input file


def file_object(file_id: str, filename: str, size: int, purpose: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": now(),
            "filename": filename, "purpose": purpose, "status": "processed",
            "expires_at": None, "status_details": None}


def store_file(gw: Gateway, owner: Tenant, content: bytes, filename: str,
               purpose: str) -> dict[str, Any]:
    record = file_object(new_id("file"), filename, len(content), purpose)
    gw.files.put(record["id"], record, owner.name, content=content)
    return record


def validated(content: bytes) -> Validation:
    """Every line checked by `lmq batch`'s own validator (it reads a file), then each chat
    line's `tool_choice` (which `lmq batch` ignores) applied as over HTTP."""
    with tempfile.TemporaryDirectory(prefix="lmq-upload-") as folder:
        path = Path(folder) / "input.jsonl"
        path.write_bytes(content)
        try:
            validation = validate_file(path)
        except UnicodeDecodeError:
            raise bad_request("the file is not UTF-8 text (JSONL)", "file") from None
    if b'"tool_choice"' in content:
        _apply_tool_choices(validation, content)
    return validation


def _apply_tool_choices(validation: Validation, content: bytes) -> None:
    # Numbered as validate_file reads them (a text file's universal newlines).
    lines = content.decode().replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept = []
    for request in validation.requests:
        choice = (json.loads(lines[request.line - 1]).get("body") or {}).get("tool_choice")
        if choice is None or not isinstance(request.job, ChatJob):
            kept.append(request)
            continue
        try:
            kept.append(replace(request, job=tool_choice.apply(request.job, choice)))
        except ApiError as exc:
            validation.errors.append((request.line, f"body.{exc.message}"))
    validation.requests = kept
    validation.errors.sort()


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
    validation = await asyncio.to_thread(validated, content)
    if not validation.ok:
        lines = validation.report(limit=SHOWN_LINE_ERRORS).splitlines()
        raise bad_request("the file has bad lines, nothing was kept: " + "; ".join(lines),
                          "file")
    return await asyncio.to_thread(store_file, gw, owner, content, file.filename or "input",
                                   purpose)


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
