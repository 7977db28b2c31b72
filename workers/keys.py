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


def attempt(job_id: str) -> str:
    """Counter of how often a job started (1 on the first run); expires with the result."""
    return f"{KEY_PREFIX}attempt:{job_id}"


def revoked(job_id: str) -> str:
    """Marker of a revoked job, in the result backend's Redis until its result expires: every
    worker, also one started after the revoke, checks it before running the job."""
    return f"{KEY_PREFIX}revoked:{job_id}"


def job(job_id: str) -> str:
    """Registry entry of one submitted job: {"model", "kind", "batch_id", "submitted_at"}."""
    return f"{KEY_PREFIX}job:{job_id}"


def held(worker: str) -> str:
    """Set of the broker delivery tags a worker holds (delivered, not yet acknowledged)."""
    return f"{KEY_PREFIX}held:{worker}"


def popping(worker: str, source: str) -> str:
    """List of entries a worker moved off broker list `source` but has not booked in `unacked`."""
    return f"{KEY_PREFIX}popping:{worker}|{source}"


def popping_pattern(worker: str, key_prefix: str = "") -> str:
    """SCAN pattern of a worker's `popping` lists (under the broker's global key prefix)."""
    literal = f"{key_prefix}{popping(worker, '')}"
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in literal) + "*"


def tenant_turns(priority_list: str) -> str:
    """Sorted set of the tenants with (possibly) waiting jobs on broker list `priority_list`
    (`workers.celery_config.tenant_list`), scored by their last turn: lowest goes next."""
    return f"{KEY_PREFIX}turns:{priority_list}"


def turn_counter() -> str:
    """Counter of takes by tenant turn: a tenant's score in `tenant_turns` after its turn."""
    return f"{KEY_PREFIX}turn"


def turn_usage() -> str:
    """Hash of each tenant's recent usage, tenant -> "<usage> <at>" (epoch s, Redis's clock):
    the take script's fair share (`workers.delivery.tenant_turns`, which derives it from
    the turn counter's key and the broker's prefix)."""
    return f"{turn_counter()}:usage"


def tenant_running(tenant: str | None) -> str:
    """Set of the delivery tags of a tenant's jobs taken and not yet acknowledged or put
    back (no tenant: `lmq:tenant-running:`), for LMQ_TENANT_MAX_RUNNING."""
    return f"{KEY_PREFIX}tenant-running:{tenant or ''}"


# Wake-up tokens kept per queue (`bell`): one per idle worker is enough, more only cost an
# extra take-script call each.
BELL_TOKENS_MAX = 64


def bell(queue: str) -> str:
    """List of wake-up tokens of broker queue `queue`: producers push some with the jobs
    they queue (at most BELL_TOKENS_MAX kept), an idle worker blocks on it (BLPOP), then
    takes by its script."""
    return f"{KEY_PREFIX}bell:{queue}"


def alive(worker: str) -> str:
    """A worker's lease: exists while the worker heartbeats (expires when it dies)."""
    return f"{KEY_PREFIX}alive:{worker}"


def held_workers() -> str:
    """Set of the workers that have (or had) a `held` set, for the janitor to check."""
    return f"{KEY_PREFIX}held-workers"


def dead_letters(queue: str) -> str:
    """List of malformed entries taken off broker queue `queue` (newest first, bounded)."""
    return f"{KEY_PREFIX}dead:{queue}"


def served() -> str:
    """Sorted set of `<model>|<worker>` members scored by when their registration lapses."""
    return f"{KEY_PREFIX}served"


def gateway_file(file_id: str) -> str:
    """Hash of one file uploaded to `lmq serve` (/v1/files): its metadata and content."""
    return f"{KEY_PREFIX}gateway:file:{file_id}"


def gateway_batch(batch_id: str) -> str:
    """Hash of one OpenAI batch record of `lmq serve` (/v1/batches)."""
    return f"{KEY_PREFIX}gateway:batch:{batch_id}"


def gateway_index(kind: str) -> str:
    """Sorted set of the gateway's `kind` ids ('file' or 'batch') scored by creation time."""
    return f"{KEY_PREFIX}gateway:{kind}s"
