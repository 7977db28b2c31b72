"""A batch's `validating` phase, run in the background: take the input file's requests
(validated at upload, `batch_input`), check them against the batch and the pool, then
enqueue them, resumably.

Every line gets a job id derived from the batch id and its place in the file, and the pool's
batch bookkeeping (`producers.batch._store`) is written before any job is published. The
publisher appends each job id to the batch's job list in Redis as it publishes, so a gateway
that stopped half-way (restart, crash) resumes by publishing only the lines whose ids are not
in that list yet: no line is enqueued twice. (Broker and store on two Redis servers: the list
is written just before the broker push, so a crash between the two leaves a job recorded but
never queued; it ends with the batch's completion window.)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from producers.batch import BatchRequest
from producers.batch import _store as pool_batches
from producers.batch._store import RequestInfo
from producers.gateway import batch_input
from producers.gateway.errors import ApiError
from producers.gateway.records import now
from producers.gateway.state import Gateway
from producers.publisher import CHUNK_JOBS

MAX_SHOWN_ERRORS = 100  # OpenAI lists the first errors, not thousands of them


@dataclass
class Intake:
    """What validation found: the requests to enqueue, or OpenAI-style errors."""

    requests: list[BatchRequest] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def job_id(batch_id: str, index: int) -> str:
    """The same id for the same line of the same batch, in every gateway process."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"lmq-batch:{batch_id}:{index}"))


def check(gw: Gateway, record: dict[str, Any]) -> Intake:
    """The input file's requests, validated at upload (`batch_input`), checked against the
    batch (each line's url is its endpoint) and the pool (the models are known)."""
    intake = _stored(gw, record["input_file_id"])
    if intake.errors:
        return intake
    errors = [_error("invalid_url", f"url {r.url} differs from the batch's endpoint "
                     f"{record['endpoint']}", "url", r.line)
              for r in intake.requests if r.url != record["endpoint"]]
    errors += _model_errors(gw, intake.requests)
    if not errors and not intake.requests:
        errors.append(_error("empty_file", "the input file has no requests", "input_file_id"))
    return Intake(intake.requests, errors[:MAX_SHOWN_ERRORS])


def _stored(gw: Gateway, file_id: str) -> Intake:
    """The requests validation produced at upload (or why there are none)."""
    stored, meta = gw.files.fields(file_id, "requests", "meta")  # not the (big) content
    requests = batch_input.unpack(stored) if stored is not None else None
    if requests is not None:
        return Intake(requests)
    # Kept without its requests (by a gateway from before they were stored, or in another
    # format): validated now, once, as at upload.
    content = gw.files.field(file_id, "content") if meta is not None else None
    if content is None:
        return Intake(errors=[_error("file_not_found", f"the input file {file_id} was "
                                     "deleted or expired", "input_file_id")])
    try:
        validation = batch_input.validated(content, gw.settings)
    except ApiError as exc:  # not UTF-8
        return Intake(errors=[_error("invalid_file", exc.message, "input_file_id")])
    return Intake(validation.requests, [_error("invalid_request", message, None, line)
                                        for line, message in validation.errors])


def _error(code: str, message: str, param: str | None,
           line: int | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _model_errors(gw: Gateway, requests: list[BatchRequest]) -> list[dict[str, Any]]:
    """Unknown models fail the batch; a known model with no live worker now is queued."""
    errors = []
    for model in sorted({r.job.model for r in requests}):
        try:
            gw.access.check(model, queue_limit=False)
        except ApiError as exc:
            if exc.status == 404:
                line = next(r.line for r in requests if r.job.model == model)
                errors.append(_error("model_not_found", exc.message, "body.model", line))
    return errors


def enqueue(gw: Gateway, record: dict[str, Any], requests: list[BatchRequest], *,
            keep_going: Callable[[], bool]) -> int:
    """Publish the lines not published yet, a chunk at a time; `keep_going()` is asked
    before each chunk (False: cancel requested, or this gateway lost its lock). Returns how
    many jobs of the batch are enqueued in all."""
    batch_id, client = record["id"], gw.queue.store_client
    ids = [job_id(batch_id, index) for index in range(len(requests))]
    pool_batches.record(client, batch_id, requests, ids, source=record["input_file_id"],
                        ttl_s=gw.settings.result_expires_s)  # the same values again on resume
    published = set(pool_batches.job_ids(client, batch_id))
    todo = [(i, r) for i, r in zip(ids, requests, strict=True) if i not in published]
    for start in range(0, len(todo), CHUNK_JOBS):
        if not keep_going():
            break
        chunk = todo[start : start + CHUNK_JOBS]
        # The window counts from the batch's creation, not from this (maybe resumed) step.
        left_s = max(1, record["expires_at"] - now())
        gw.queue.submit_many([r.job for _, r in chunk], batch_id=batch_id,
                             job_ids=[i for i, _ in chunk], enqueue_anyway=True,
                             priority="low", expires_s=left_s, checked=True)
        published.update(i for i, _ in chunk)
    return len(published)


def never_enqueued(gw: Gateway, record: dict[str, Any]) -> list[RequestInfo]:
    """The batch's requests that were never published (a cancel stopped `enqueue`), in file
    order: recorded in the bookkeeping, not in the batch's job list."""
    batch_id, client = record["id"], gw.queue.store_client
    published = set(pool_batches.job_ids(client, batch_id))
    ids = [job_id(batch_id, index) for index in range(record["request_counts"]["total"])]
    left = [i for i in ids if i not in published]
    return [info for page in pool_batches.requests(client, batch_id, left) for info in page]
