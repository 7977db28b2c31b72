"""An OpenAI batch over the pool: its record, and the steps that move it along.

    validating -> in_progress -> finalizing -> completed
        |             |  \\-> (completion window passed) -> expired (unfinished jobs revoked)
        |             \\-> cancelling -> cancelled
        \\-> failed (bad lines, unknown model, input file gone)

`create` only checks what the request itself says (endpoint, window, the file is the
caller's and is a batch file), stores the record as `validating` and returns: the lines are
checked and enqueued in the background (`batch_intake`), by the gateways' advance loop
(`batch_advancer`), which calls `advance` for every open batch while holding that batch's
lock. Only `advance` rewrites a record after creation; a cancel only sets the record's
`cancel` field, which `advance` acts on (and `shown` already reports), so the two never
overwrite each other. Everything is in Redis: a restarted gateway resumes where the last
one stopped.

`expiring` and a pending cancel are ours: OpenAI clients see `in_progress` and `cancelling`.
The completion window becomes the jobs' `expires_s` (a job not started by then never runs);
at `expires_at` the loop revokes what is left, and every request not completed is in the
error file with code `batch_expired`, as OpenAI reports it. Batch jobs are bulk work: low
priority, whatever the key's default.

A batch cancelled while still validating ends as OpenAI documents a cancel ("partial results
(if any) available in the output file", API reference, POST /v1/batches/{id}/cancel): what
ran is in the output file (or the error file, if it failed or was stopped mid-prediction);
a request that never ran is in neither, as OpenAI lists unrun requests only at expiry.
`request_counts.total` stays the file's request count, so completed + failed < total.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from producers import batch as batch_files
from producers.batch import BatchNotFoundError
from producers.gateway import batch_intake
from producers.gateway.auth import Tenant
from producers.gateway.errors import bad_request
from producers.gateway.files import owned_file, store_file
from producers.gateway.records import OpenBatches, now
from producers.gateway.state import Gateway

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
DONE = frozenset({"completed", "failed", "expired", "cancelled"})
CANCELLABLE = frozenset({"validating", "in_progress", "expiring"})
ENDING = {"in_progress": "completed", "cancelling": "cancelled", "expiring": "expired"}
_WINDOW = re.compile(r"^(\d+)h$")


def window_s(window: str, settings_ttl_s: int) -> int:
    match = _WINDOW.match(window or "")
    hours = int(match.group(1)) if match else 0
    if not hours >= 1 or hours * 3600 > settings_ttl_s:
        raise bad_request(f"completion_window must be like '24h' (1 hour up to "
                          f"LMQ_RESULT_EXPIRES_S={settings_ttl_s}s), not {window!r}",
                          "completion_window")
    return hours * 3600


def new_record(batch_id: str, body: dict[str, Any], expires_s: int) -> dict[str, Any]:
    created = now()
    return {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"], "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": created,
            "in_progress_at": None, "expires_at": created + expires_s, "finalizing_at": None,
            "completed_at": None, "failed_at": None, "expired_at": None,
            "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata")}


def create(gw: Gateway, owner: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    """The new batch, `validating`: its lines are checked and enqueued in the background."""
    if body.get("endpoint") not in ENDPOINTS:
        raise bad_request(f"endpoint must be one of {', '.join(ENDPOINTS)}", "endpoint")
    expires_s = window_s(body.get("completion_window", ""), gw.settings.result_expires_s)
    source = owned_file(gw, str(body.get("input_file_id")), owner)
    if source["purpose"] != "batch":
        raise bad_request(f"file {source['id']} has purpose {source['purpose']!r}, not batch",
                          "input_file_id")
    record = new_record(batch_files.new_batch_id(), body, expires_s)
    gw.batches.put(record["id"], record, owner.name, priority=owner.priority)
    OpenBatches(gw.batches.client).add(record["id"])
    return record


def request_cancel(gw: Gateway, record: dict[str, Any]) -> dict[str, Any]:
    """Ask the advance loop to revoke what has not finished (finished results are kept)."""
    if record["status"] in CANCELLABLE:
        gw.batches.set_field(record["id"], "cancel", str(now()), only_new=True)
    return shown(gw, record)


def cancel_requested(gw: Gateway, batch_id: str) -> int | None:
    raw = gw.batches.field(batch_id, "cancel")
    return int(raw) if raw else None


def shown(gw: Gateway, record: dict[str, Any]) -> dict[str, Any]:
    """The record as OpenAI clients know it (no `expiring`; a pending cancel shows)."""
    status = record["status"]
    if status in CANCELLABLE:
        asked = cancel_requested(gw, record["id"])
        if asked is not None:
            return {**record, "status": "cancelling", "cancelling_at": asked}
    return {**record, "status": "in_progress"} if status == "expiring" else record


# --- the advance loop's steps (under the batch's lock) ---------------------------------


def advance(gw: Gateway, batch_id: str, keep_lock: Callable[[], bool],
            count_due: Callable[[int], bool] = lambda _total: True) -> None:
    """One step of an open batch: validate and enqueue, act on a cancel or the completion
    window, count its jobs (when `count_due(total)`: reading every job's state is the
    costly part for a big batch), finalize when they all ended."""
    found = gw.batches.get_any(batch_id)
    if found is None or found[0]["status"] in DONE:
        OpenBatches(gw.batches.client).remove(batch_id)
        return
    record, tenant = found
    changed = record["status"] == "validating"
    if changed:
        if not _validate(gw, record, keep_lock):
            return  # lost the lock, or stopping: the next holder resumes
        if record["status"] == "failed":
            OpenBatches(gw.batches.client).remove(batch_id)
            return
    asked = cancel_requested(gw, batch_id)
    if asked is not None and record["status"] in CANCELLABLE:
        _revoke(gw, batch_id)
        record.update(status="cancelling", cancelling_at=asked)
        changed = True
    elif record["status"] == "in_progress" and now() >= record["expires_at"]:
        _revoke(gw, batch_id)
        record["status"] = "expiring"
        changed = True
    if record["status"] != "finalizing":
        if not changed and not count_due(record["request_counts"]["total"]):
            return
        if not _count(gw, record):
            gw.batches.update(batch_id, record)
            return
    _finalize(gw, record, Tenant(tenant))
    OpenBatches(gw.batches.client).remove(batch_id)


def _validate(gw: Gateway, record: dict[str, Any], keep_lock: Callable[[], bool]) -> bool:
    """validating -> in_progress (all lines enqueued) or failed; False if interrupted."""
    intake = batch_intake.check(gw, record)
    if intake.errors:
        record.update(status="failed", failed_at=now(),
                      errors={"object": "list", "data": intake.errors})
        gw.batches.update(record["id"], record)
        return True
    cancelled = False

    def keep_going() -> bool:
        nonlocal cancelled
        cancelled = cancel_requested(gw, record["id"]) is not None
        return not cancelled and keep_lock()

    enqueued = batch_intake.enqueue(gw, record, intake.requests, keep_going=keep_going)
    if enqueued < len(intake.requests) and not cancelled:
        return False
    record["request_counts"]["total"] = len(intake.requests)  # enqueued or not (cancel)
    if not cancelled:
        record.update(status="in_progress", in_progress_at=now())
    return True


def _revoke(gw: Gateway, batch_id: str) -> None:
    with contextlib.suppress(BatchNotFoundError):  # cancelled before any line was enqueued
        batch_files.cancel(gw.queue, batch_id)


def _count(gw: Gateway, record: dict[str, Any]) -> bool:
    """Update request_counts from the jobs' states; True when every job has ended."""
    try:
        status = batch_files.status(gw.queue, record["id"])
    except BatchNotFoundError:  # nothing enqueued (cancelled while validating)
        return bool(record["status"] != "validating")
    counts = status["counts"]
    record["request_counts"] = {  # a batch cancelled while validating: fewer enqueued
        "total": max(status["enqueued"], record["request_counts"]["total"]),
        "completed": counts.get("SUCCESS", 0),
        "failed": counts.get("FAILURE", 0) + counts.get("REVOKED", 0)}
    return bool(record["status"] != "validating"
                and status["finished"] >= status["enqueued"])


def _finalize(gw: Gateway, record: dict[str, Any], owner: Tenant) -> None:
    """finalizing (saved first: a restart finalizes again), the files, then the end."""
    if record["status"] != "finalizing":
        gw.batches.set_field(record["id"], "ending", ENDING[record["status"]])
        record.update(status="finalizing", finalizing_at=now())
        gw.batches.update(record["id"], record)
    ending = (gw.batches.field(record["id"], "ending") or b"completed").decode()
    if record["request_counts"]["total"]:
        with tempfile.TemporaryDirectory(prefix="lmq-batch-") as folder:
            out, err = Path(folder) / "output.jsonl", Path(folder) / "errors.jsonl"
            batch_files.write_results(gw.queue, record["id"], out, err)
            if ending == "expired":
                _mark_expired(err)
            elif ending == "cancelled" and record.get("in_progress_at") is None:
                record["request_counts"]["failed"] = _drop_never_run(err)
            for path, field in ((out, "output_file_id"), (err, "error_file_id")):
                content = path.read_bytes()
                if content:
                    name = f"{record['id']}_{path.stem}.jsonl"
                    record[field] = store_file(gw, owner, content, name,
                                               "batch_output")["id"]
    record.update(status=ending, **{f"{ending}_at": now()})
    gw.batches.update(record["id"], record)


EXPIRED = {"code": "batch_expired", "message": "This request could not be executed before "
           "the completion window expired."}


def _drop_never_run(errors: Path) -> int:
    """Leave out of the error file the requests revoked before they started (cancelled
    while validating: OpenAI lists no unrun request); returns how many lines are left."""
    lines = [json.loads(line) for line in errors.read_text().splitlines()]
    ran = [line for line in lines if not ((line.get("error") or {}).get("code")
                                           == "batch_cancelled"
                                           and (line.get("response") or {}).get("body") is None)]
    errors.write_text("".join(json.dumps(line) + "\n" for line in ran))
    return len(ran)


def _mark_expired(errors: Path) -> None:
    """Requests revoked at expiry, or never started within the window (the worker's
    JobExpiredError), say so as OpenAI's do."""
    lines = [json.loads(line) for line in errors.read_text().splitlines()]
    for line in lines:
        body = ((line.get("response") or {}).get("body") or {})
        code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
        if (line.get("error") or {}).get("code") == "batch_cancelled" \
                or code == "JobExpiredError":
            line["error"] = EXPIRED
    errors.write_text("".join(json.dumps(line) + "\n" for line in lines))
