"""OpenAI Batch API files through the pool: submit, status, cancel, results.

    from producers.batch import submit_file, status, cancel, write_results
    batch_id = submit_file(queue, Path("requests.jsonl"), {"gpt-4o": "llama-3.2-1b-instruct"})

Bookkeeping lives in Redis (see `_store`), so status, cancel and results work from any
process that knows the batch id.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import states

from producers.batch import _store
from producers.batch._output import error_line, output_line
from producers.batch._request import BatchRequest, LineError, parse_line
from producers.batch._store import BatchNotFoundError
from producers.batch._validate import Validation, check_sizes, parse_model_map, validate_file
from producers.cancellation import job_states
from producers.job_building import check_deadlines, check_priority
from workers.error import ModelNotServedError

__all__ = [
    "BatchInvalidError", "BatchNotFoundError", "BatchRequest", "LineError", "ResultCounts",
    "Validation", "cancel", "check_sizes", "parse_model_map", "parse_line", "status",
    "submit_file",
    "completion_window_s", "submit_requests", "validate_file", "write_results",
]

FINISHED = frozenset(states.READY_STATES)


class BatchInvalidError(ValueError):
    """The batch file has bad lines; nothing was enqueued. args: (report, validation)."""


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex[:24]}"


def completion_window_s(window: str) -> float:
    """OpenAI's `completion_window` ("24h"; also "90m") in seconds: the jobs' expires_s."""
    number, unit = window[:-1], window[-1:]
    if unit not in ("h", "m") or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"completion window {window!r}: use hours or minutes, e.g. 24h or 90m")
    return float(int(number) * (3600 if unit == "h" else 60))


def submit_file(queue: Any, path: Path, model_map: dict[str, str] | None = None, *,
                enqueue_anyway: bool = False, priority: str = "low",
                expires_s: float | None = None) -> tuple[str, Validation]:
    """Validate every line, then record and enqueue all requests; nothing on any error."""
    validation = validate_file(path, model_map)
    check_sizes(validation, queue.settings)
    if not validation.ok:
        raise BatchInvalidError(validation.report(), validation)
    batch_id = submit_requests(queue, validation.requests, source=str(path),
                               enqueue_anyway=enqueue_anyway, priority=priority,
                               expires_s=expires_s)
    return batch_id, validation


def submit_requests(queue: Any, reqs: list[BatchRequest], *, source: str,
                    enqueue_anyway: bool = False, priority: str = "low",
                    expires_s: float | None = None) -> str:
    """Record and enqueue requests already validated: every line by `validate_file` (its
    config through the SDK's schema) and `check_sizes`, so they are sent as they are, not
    checked again (`submit_many(checked=True)`: a second check of 10,000 configs cost about
    as long as the first). Batch files are bulk work, so their jobs are low priority unless
    `priority` says otherwise. `expires_s` (the batch's completion window): a job not
    started by then never runs."""
    batch_id = new_batch_id()
    check_priority(priority)  # fail before recording anything
    check_deadlines(expires_s=expires_s)
    if not enqueue_anyway:
        _check_served(queue, {r.job.model for r in reqs})
    job_ids = [str(uuid.uuid4()) for _ in reqs]
    _store.record(queue.store_client, batch_id, reqs, job_ids, source=source,
                  ttl_s=queue.settings.result_expires_s)
    queue.submit_many([r.job for r in reqs], batch_id=batch_id, job_ids=job_ids,
                      enqueue_anyway=True, priority=priority, expires_s=expires_s,
                      checked=True)
    return batch_id


def _check_served(queue: Any, models: set[str]) -> None:
    served = queue.served_models(refresh=True)
    missing = sorted(models - set(served))
    if missing:
        raise ModelNotServedError(
            f"no live worker serves {', '.join(missing)}; served: {', '.join(sorted(served))}"
            " or none. Start workers, map names with --model-map, or use --enqueue-anyway")


def status(queue: Any, batch_id: str) -> dict[str, Any]:
    """Counts per job state, plus the batch's metadata."""
    meta = _store.meta(queue.store_client, batch_id)
    ids = _store.job_ids(queue.store_client, batch_id)
    counts = Counter(job_states(queue.app, ids))
    done = sum(n for state, n in counts.items() if state in FINISHED)
    return {"batch_id": batch_id, "total": int(meta.get("total", len(ids))),
            "enqueued": len(ids), "finished": done, "counts": dict(sorted(counts.items())),
            "created_at": float(meta["created_at"]), "input": meta.get("input"),
            "cancelled_at": float(meta["cancelled_at"]) if "cancelled_at" in meta else None}


def cancel(queue: Any, batch_id: str) -> dict[str, int]:
    """Revoke every unfinished job; finished results (and partial ones) are kept."""
    _store.meta(queue.store_client, batch_id)
    _store.mark_cancelled(queue.store_client, batch_id)
    outcome = queue.cancel_batch(batch_id)
    if outcome is None:
        return {"revoked": 0, "finished": 0}
    return {"revoked": len(outcome.revoked), "finished": len(outcome.finished)}


def wait_finished(queue: Any, batch_id: str, timeout_s: float, poll_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        counts = status(queue, batch_id)
        if counts["finished"] >= counts["enqueued"]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


@dataclass
class ResultCounts:
    results: int = 0
    errors: int = 0
    pending: int = 0


def write_results(queue: Any, batch_id: str, out: Path, errors: Path) -> ResultCounts:
    """Write OpenAI-format output and error files, in input order; unfinished are counted."""
    _store.meta(queue.store_client, batch_id)
    counts = ResultCounts()
    with out.open("w", encoding="utf-8") as out_file, \
            errors.open("w", encoding="utf-8") as err_file:
        for page in _store.requests(queue.store_client, batch_id):
            found = queue.fetch_results([info.job_id for info in page])
            for info in page:
                state, payload = found[info.job_id]
                if state == states.SUCCESS:
                    out_file.write(json.dumps(output_line(info, payload)) + "\n")
                    counts.results += 1
                elif state in (states.FAILURE, states.REVOKED):
                    err_file.write(json.dumps(error_line(info, state, payload)) + "\n")
                    counts.errors += 1
                else:
                    counts.pending += 1
    return counts
