"""Names of every Redis key lmstudio-queue owns (all start with `lmq:`)."""

from __future__ import annotations

from workers.contract import KEY_PREFIX


def fragment_stream(job_id: str) -> str:
    """Redis stream of a job's generated text: entries {"t": text}, last one {"end": state}."""
    return f"{KEY_PREFIX}fragments:{job_id}"


def batch(batch_id: str) -> str:
    """Hash of a batch's bookkeeping (counters per state, metadata)."""
    return f"{KEY_PREFIX}batch:{batch_id}"


def batch_jobs(batch_id: str) -> str:
    """List of the job ids of a batch, in submission order."""
    return f"{KEY_PREFIX}batch:{batch_id}:jobs"


def admission(group: str) -> str:
    """Prefix of a host group's admission keys (budget, leases, waiters)."""
    return f"{KEY_PREFIX}admission:{group}"


def metrics(model: str) -> str:
    """Hash of a model's job counters for the metrics endpoint."""
    return f"{KEY_PREFIX}metrics:{model}"
