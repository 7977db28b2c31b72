"""An OpenAI batch over the pool: create, refresh its status from its jobs, finalize, cancel.

    validating -> in_progress -> finalizing -> completed
                      |  \\-> (completion window passed) -> expired (unfinished jobs revoked)
                      \\-> cancelling -> cancelled          failed: bad input, unknown model

Creation validates the input file with `lmq batch`'s validator and enqueues every line as a
job (`producers.batch.submit_requests`), so the batch is in_progress when the call returns.
There is no background loop: each GET (or list) of a batch that is not done yet counts its
jobs' states, and the first one that finds them all finished writes the output and error
files (`producers.batch.write_results`, OpenAI's line formats) and closes the record. A
gateway restart loses nothing: the record, the jobs and their results are all in Redis.

The completion window becomes the jobs' `expires_s` (a job not started by then never
runs, as batch files' `--completion-window`); the gateway also records `expires_at` and, at
the first refresh after it, revokes what is still running, so the batch ends `expired`.
Batch jobs are bulk work: low priority, whatever the key's default.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from producers import batch as batch_files
from producers.batch import BatchRequest
from producers.gateway.auth import Tenant
from producers.gateway.errors import ApiError, bad_request
from producers.gateway.files import owned_file, store_file, validated
from producers.gateway.records import now
from producers.gateway.state import Gateway

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
DONE = frozenset({"completed", "failed", "expired", "cancelled"})
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
    if body.get("endpoint") not in ENDPOINTS:
        raise bad_request(f"endpoint must be one of {', '.join(ENDPOINTS)}", "endpoint")
    expires_s = window_s(body.get("completion_window", ""), gw.settings.result_expires_s)
    source = owned_file(gw, str(body.get("input_file_id")), owner)
    if source["purpose"] != "batch":
        raise bad_request(f"file {source['id']} has purpose {source['purpose']!r}, not batch",
                          "input_file_id")
    validation = validated(gw.files.field(source["id"], "content") or b"")
    errors = _line_errors(validation.errors, validation.requests, body["endpoint"])
    errors += _model_errors(gw, validation.requests)
    batch_id = "" if errors else batch_files.submit_requests(
        gw.queue, validation.requests, source=source["id"], enqueue_anyway=True,
        expires_s=expires_s)
    record = new_record(batch_id or _failed_id(), body, expires_s)
    record["request_counts"]["total"] = len(validation.requests)
    if errors:
        record.update(status="failed", failed_at=now(),
                      errors={"object": "list", "data": errors[:100]})
    else:
        record.update(status="in_progress", in_progress_at=now())
    gw.batches.put(record["id"], record, owner.name, priority=owner.priority)
    return record


def _failed_id() -> str:
    return batch_files.new_batch_id()


def _line_errors(bad: list[tuple[int, str]], requests: list[BatchRequest],
                 endpoint: str) -> list[dict[str, Any]]:
    errors = [{"code": "invalid_request", "message": message, "param": None, "line": line}
              for line, message in bad]
    errors += [{"code": "invalid_url", "message": f"url {r.url} differs from the batch's "
                f"endpoint {endpoint}", "param": "url", "line": r.line}
               for r in requests if r.url != endpoint]
    return errors


def _model_errors(gw: Gateway, requests: list[BatchRequest]) -> list[dict[str, Any]]:
    """Unknown models fail the batch; a known model with no live worker now is queued."""
    errors = []
    for model in sorted({r.job.model for r in requests}):
        try:
            gw.access.check(model)
        except ApiError as exc:
            if exc.status == 404:
                line = next(r.line for r in requests if r.job.model == model)
                errors.append({"code": "model_not_found", "message": exc.message,
                               "param": "body.model", "line": line})
    return errors


def refresh(gw: Gateway, record: dict[str, Any]) -> dict[str, Any]:
    """The record with its status and request counts as of now (finalized when done)."""
    if record["status"] in DONE:
        return record
    status = batch_files.status(gw.queue, record["id"])
    counts = status["counts"]
    failed = counts.get("FAILURE", 0) + counts.get("REVOKED", 0)
    record["request_counts"] = {"total": status["enqueued"],
                                "completed": counts.get("SUCCESS", 0), "failed": failed}
    if status["finished"] < status["enqueued"]:
        if record["status"] == "in_progress" and now() >= record["expires_at"]:
            batch_files.cancel(gw.queue, record["id"])
            record.update(status="expiring")
        gw.batches.update(record["id"], record)
        return _shown(record)
    return _finalize(gw, record)


def _shown(record: dict[str, Any]) -> dict[str, Any]:
    """'expiring' is ours: OpenAI clients know it as in_progress until it is expired."""
    return {**record, "status": "in_progress"} if record["status"] == "expiring" else record


def _finalize(gw: Gateway, record: dict[str, Any]) -> dict[str, Any]:
    if not gw.batches.lock(record["id"]):
        return {**record, "status": "finalizing"}
    try:
        record["finalizing_at"] = now()
        owner = Tenant((gw.batches.field(record["id"], "tenant") or b"").decode())
        with tempfile.TemporaryDirectory(prefix="lmq-batch-") as folder:
            out, err = Path(folder) / "output.jsonl", Path(folder) / "errors.jsonl"
            batch_files.write_results(gw.queue, record["id"], out, err)
            if record["status"] == "expiring":
                _mark_expired(err)
            for path, field in ((out, "output_file_id"), (err, "error_file_id")):
                content = path.read_bytes()
                if content:
                    name = f"{record['id']}_{path.stem}.jsonl"
                    record[field] = store_file(gw, owner, content, name,
                                               "batch_output")["id"]
        final = {"in_progress": "completed", "cancelling": "cancelled",
                 "expiring": "expired"}[record["status"]]
        record.update(status=final, **{f"{final}_at": now()})
        gw.batches.update(record["id"], record)
        return record
    finally:
        gw.batches.unlock(record["id"])


EXPIRED = {"code": "batch_expired", "message": "This request could not be executed before "
           "the completion window expired."}


def _mark_expired(errors: Path) -> None:
    """Requests revoked at expiry say so, as OpenAI's do (not 'batch_cancelled')."""
    lines = [json.loads(line) for line in errors.read_text().splitlines()]
    for line in lines:
        if (line.get("error") or {}).get("code") == "batch_cancelled":
            line["error"] = EXPIRED
    errors.write_text("".join(json.dumps(line) + "\n" for line in lines))


def cancel(gw: Gateway, record: dict[str, Any]) -> dict[str, Any]:
    """Revoke what has not finished; finished results (and partial ones) are kept."""
    if record["status"] in DONE or record["status"] == "cancelling":
        return refresh(gw, record)
    if record["status"] in ("in_progress", "expiring"):
        batch_files.cancel(gw.queue, record["id"])
    record.update(status="cancelling", cancelling_at=now())
    gw.batches.update(record["id"], record)
    return refresh(gw, record)
