"""A batch input file's lines, validated once: at upload, as OpenAI does.

`validated` checks every line (`lmq batch`'s own validator, each chat line's `tool_choice`,
the pool's size limits); a file with a bad line is refused at upload (400 naming the line),
so a stored batch input file holds only good lines. What validation produced, the jobs, is
stored next to the file's bytes (`pack`, zlib-compressed JSON lines: about a tenth of the
file), and a batch created from the file reads those jobs back (`unpack`) instead of checking
the lines again; they are sent as they are (`JobQueue.submit_many(..., checked=True)`).

Left to the batch's `validating` step, because they depend on the batch or on the pool at
that time and not on the lines: each line's url against the batch's endpoint, and whether
the models are known.
"""

from __future__ import annotations

import json
import tempfile
import zlib
from dataclasses import replace
from pathlib import Path

from producers.batch import BatchRequest, Validation, check_sizes, validate_file
from producers.gateway import tool_choice
from producers.gateway.errors import ApiError, bad_request
from producers.job_building import JOB_FOR_KIND
from workers.contract import ChatJob
from workers.settings import Settings

FORMAT = 1  # of the packed requests: a file stored with another format is checked again


def validated(content: bytes, settings: Settings) -> Validation:
    """Every line checked by `lmq batch`'s own validator (it reads a file), then each chat
    line's `tool_choice` (which `lmq batch` ignores) applied as over HTTP, then the size
    limits `JobQueue.submit` would check (LMQ_MAX_PROMPT_CHARS, LMQ_MAX_EMBED_TEXTS)."""
    with tempfile.TemporaryDirectory(prefix="lmq-upload-") as folder:
        path = Path(folder) / "input.jsonl"
        path.write_bytes(content)
        try:
            validation = validate_file(path)
        except UnicodeDecodeError:
            raise bad_request("the file is not UTF-8 text (JSONL)", "file") from None
    if b'"tool_choice"' in content:
        _apply_tool_choices(validation, content)
    check_sizes(validation, settings)
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


def pack(requests: list[BatchRequest]) -> bytes:
    """The validated requests as stored next to the file: one JSON line each."""
    lines = [json.dumps([r.line, r.custom_id, r.url, r.job.model_dump(mode="json")])
             for r in requests]
    return zlib.compress(f"{FORMAT}\n{chr(10).join(lines)}".encode(), 1)


def unpack(raw: bytes) -> list[BatchRequest] | None:
    """The requests `pack` stored; None if they were stored in another format."""
    text = zlib.decompress(raw).decode()
    version, _, body = text.partition("\n")
    if version != str(FORMAT):
        return None
    requests = []
    for line in body.split("\n"):
        number, custom_id, url, job = json.loads(line)
        # The contract's own model rebuilds the job validation produced (no line checks,
        # no SDK schema: that job met them at upload).
        requests.append(BatchRequest(number, custom_id, url,
                                     JOB_FOR_KIND[job["kind"]].model_validate(job)))
    return requests
