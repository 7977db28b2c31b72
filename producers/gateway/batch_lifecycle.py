"""An OpenAI batch over the pool: its record, and the steps that move it along.

    validating -> in_progress -> finalizing -> completed
        |             |  \\-> (completion window passed) -> expired (unfinished jobs revoked)
        |             \\-> cancelling -> cancelled
        \\-> failed (unknown model, a line's url not the batch's endpoint, input file gone)

`create` only checks what the request itself says (endpoint, window, the file is the
caller's and is a batch file), stores the record as `validating` and returns: the lines,
validated at upload (`batch_input`), are checked against the batch and the pool and enqueued
in the background (`batch_intake`), by the gateways' advance loop (`batch_advancer`), which
calls `advance` for every open batch while holding that batch's lock. Only `advance`
rewrites a record after creation; a cancel only sets the record's `cancel` field, which
`advance` acts on (and `shown` already reports), so the two never overwrite each other. A
cancel and the batch's ending are decided in Redis, atomically with each other
(`_CANCEL`, `_ENDING`): a cancel accepted before the ending is fixed makes the batch end
`cancelled`, one that comes later changes nothing (its reply shows the batch as it is).
Everything is in Redis: a restarted gateway resumes where the last one stopped.

`expiring` and a pending cancel are ours: OpenAI clients see `in_progress` and `cancelling`
(and a cancelled batch still `cancelling` while its files are written: OpenAI documents
`cancelling` then `cancelled`, nothing in between).
The completion window becomes the jobs' `expires_s` (a job not started by then never runs);
at `expires_at` the loop revokes what is left, and every request not completed is in the
error file with code `batch_expired` and no response, as OpenAI's batch guide shows it.
Batch jobs are bulk work: low priority, whatever the key's default.

A cancelled batch, whenever the cancel came (validating or in progress): what completed is in
the output file ("partial results (if any) available in the output file", OpenAI's API
reference, POST /v1/batches/{id}/cancel) and every other request is in the error file: its
own error if it failed, code `batch_cancelled` with the partial response if it was stopped
mid-prediction, code `batch_cancelled` and no response if it never ran (revoked while
queued, or never enqueued because the cancel stopped validation). OpenAI's reference does not
spell out the error file of a cancel; this is what OpenAI-compatible batch services document
(DeepInfra's and Morph's batch docs: the rest "are written to the error file as
batch_cancelled"), and it keeps `request_counts` whole: completed + failed = total, the file's
requests, for every batch that ends.
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
from producers.gateway.records import OpenBatches, now, text
from producers.gateway.state import Gateway
from workers import keys

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


# A cancel is taken only while the batch's ending is open (set once, by `_ENDING`).
_CANCEL = ("if redis.call('hexists', KEYS[1], 'ending') == 0 then "
           "redis.call('hsetnx', KEYS[1], 'cancel', ARGV[1]) end "
           "return redis.call('hget', KEYS[1], 'cancel')")
# The ending, fixed once: `cancelled` if a cancel was taken before (it wins over the
# completion window, as when `advance` sees it first), else the status's own.
_ENDING = ("local ending = redis.call('hget', KEYS[1], 'ending') "
           "if ending then return ending end "
           "ending = ARGV[1] "
           "if redis.call('hexists', KEYS[1], 'cancel') == 1 then ending = 'cancelled' end "
           "redis.call('hset', KEYS[1], 'ending', ending) "
           "return ending")


def request_cancel(gw: Gateway, record: dict[str, Any]) -> dict[str, Any]:
    """Ask the advance loop to revoke what has not finished (finished results are kept);
    the batch as it is now (`cancelling`, unless it was ending already)."""
    if record["status"] not in CANCELLABLE:
        return shown(gw, record)
    gw.batches.client.eval(_CANCEL, 1, keys.gateway_batch(record["id"]), str(now()))
    found = gw.batches.get_any(record["id"])
    return shown(gw, found[0] if found is not None else record)


def cancel_requested(gw: Gateway, batch_id: str) -> int | None:
    raw = gw.batches.field(batch_id, "cancel")
    return int(raw) if raw else None


def shown(gw: Gateway, record: dict[str, Any]) -> dict[str, Any]:
    """The record as OpenAI clients know it (no `expiring`; a pending cancel shows, and a
    cancelled batch writing its files is still `cancelling`)."""
    status = record["status"]
    if status in CANCELLABLE:
        asked = cancel_requested(gw, record["id"])
        if asked is not None:
            return {**record, "status": "cancelling", "cancelling_at": asked}
    elif status == "finalizing" and gw.batches.field(record["id"], "ending") == b"cancelled":
        return {**record, "status": "cancelling"}
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
        ending = _fix_ending(gw, record["id"], ENDING[record["status"]])
        if ending == "cancelled" and record.get("cancelling_at") is None:
            record["cancelling_at"] = cancel_requested(gw, record["id"])  # came at the end
        record.update(status="finalizing", finalizing_at=now())
        gw.batches.update(record["id"], record)
    ending = _fix_ending(gw, record["id"], "completed")  # the one fixed above
    if record["request_counts"]["total"]:
        _write_files(gw, record, owner, ending)
    record.update(status=ending, **{f"{ending}_at": now()})
    gw.batches.update(record["id"], record)


def _fix_ending(gw: Gateway, batch_id: str, ending: str) -> str:
    return text(gw.batches.client.eval(_ENDING, 1, keys.gateway_batch(batch_id), ending))


def _write_files(gw: Gateway, record: dict[str, Any], owner: Tenant, ending: str) -> None:
    """The output and error files; `request_counts` counted from their lines, so the counts
    and the files always agree (completed + failed = total)."""
    with tempfile.TemporaryDirectory(prefix="lmq-batch-") as folder:
        out, err = Path(folder) / "output.jsonl", Path(folder) / "errors.jsonl"
        batch_files.write_results(gw.queue, record["id"], out, err)
        if ending == "expired":
            _mark_unrun(err, EXPIRED, expiry=True)
        elif ending == "cancelled":
            _mark_unrun(err, CANCELLED, expiry=False)
            with err.open("a", encoding="utf-8") as errors:
                for info in batch_intake.never_enqueued(gw, record):
                    errors.write(json.dumps(_unrun_line(info.job_id, info.custom_id,
                                                        CANCELLED)) + "\n")
        counts = {}
        for path, field in ((out, "output_file_id"), (err, "error_file_id")):
            content = path.read_bytes()
            counts[field] = content.count(b"\n")
            if content:
                name = f"{record['id']}_{path.stem}.jsonl"
                record[field] = store_file(gw, owner, content, name, "batch_output")["id"]
    record["request_counts"] = {
        "total": max(record["request_counts"]["total"], sum(counts.values())),
        "completed": counts["output_file_id"], "failed": counts["error_file_id"]}


EXPIRED = {"code": "batch_expired", "message": "This request could not be executed before "
           "the completion window expired."}
CANCELLED = {"code": "batch_cancelled", "message": "This request was not executed: the "
             "batch was cancelled before it started."}


def _unrun_line(job_id: str, custom_id: str, error: dict[str, str]) -> dict[str, Any]:
    """An error file line for a request that never ran, as OpenAI's batch guide shows an
    expired one: no response, the batch-level error."""
    return {"id": f"batch_req_{job_id}", "custom_id": custom_id, "response": None,
            "error": error}


def _mark_unrun(errors: Path, error: dict[str, str], *, expiry: bool) -> None:
    """Requests revoked before they started (by the cancel, or at expiry) and, at expiry,
    those never started within the window (the worker's JobExpiredError): `error`, and no
    response. A request stopped mid-prediction keeps its partial response (at expiry, with
    `error`; cancelled, with its own `batch_cancelled` error)."""
    lines = [json.loads(line) for line in errors.read_text().splitlines()]
    for number, line in enumerate(lines):
        body = (line.get("response") or {}).get("body")
        code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
        revoked = (line.get("error") or {}).get("code") == "batch_cancelled"
        if (revoked and body is None) or (expiry and code == "JobExpiredError"):
            lines[number] = _unrun_line(line["id"].removeprefix("batch_req_"),
                                        line["custom_id"], error)
        elif revoked and expiry:
            line["error"] = error
    errors.write_text("".join(json.dumps(line) + "\n" for line in lines))
