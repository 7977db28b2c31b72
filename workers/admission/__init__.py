"""Admission on LM Studio 0.4's memory model: the real `Gate`, and how many threads a
worker runs. Two layers: a loaded instance's KV cells and parallel slots (`instance`), and
the host's GPU memory for model loads and per-token (MLX) KV (`budget`, `semaphore`).

    build_gate(settings, facts)    AdmissionGate (NullGate when LMQ_ADMISSION=false); with the
                                   host's memory unknown it admits by slots and warns once
    thread_count(settings, facts)  predictions per worker process (LMQ_SLOTS; rule below)
    status.group_status(url, g)    what `lmq gpu` shows; reusable by `lmq workers`, metrics

Modules: `gguf_kv` (KV bytes/token from a GGUF header), `mlx_kv` (from an MLX model's
config.json), `estimate` (weights and KV cost, fallbacks), `instance` (an instance's KV
cells, parallel slots, per-sequence limit), `host_memory` (NVML, Apple unified memory,
AMD SMI), `budget` (host memory minus reserve, or unknown), `semaphore` + `lua` (the shared
weighted semaphore and its admission rule), `gate` (AdmissionGate), `lookahead` (more jobs
taken while the worker's jobs wait for KV), `status` (read side), `seam`
(the `Gate` protocol job runners call, `NullGate`, and the per-process `SlotLimit`).

May import: the shared modules (`workers.error`, `settings`, `keys`) and Redis. Never the
job runners, delivery, the LM Studio boundary (the worker's start-up passes in what it
learnt of the model as `ModelFacts`) or Celery.
"""

from __future__ import annotations

import logging

from workers import redis_pool
from workers.admission.budget import Budget, gpu_budget
from workers.admission.estimate import ModelCost, model_cost
from workers.admission.gate import AdmissionGate
from workers.admission.lookahead import Lookahead
from workers.admission.seam import Gate, ModelFacts, NullGate
from workers.admission.semaphore import UNKNOWN_BUDGET, GroupSemaphore
from workers.settings import Settings

__all__ = [
    "AdmissionGate",
    "Budget",
    "Lookahead",
    "build_gate",
    "plan_cost",
    "thread_count",
]

log = logging.getLogger(__name__)

# LM Studio's usual context length when neither the worker nor the settings say.
DEFAULT_CONTEXT_LENGTH = 4096


SHORT_JOB_TOKENS = 256  # a short chat's prompt plus reply


def plan_cost(settings: Settings, facts: ModelFacts) -> ModelCost:
    """The model's cost, with the context length resolved: loaded, setting, GGUF, 4096;
    on llama.cpp also the KV cache it allocates at load, for the context it loads with
    (loaded, setting, else LM Studio's usual 4096: not the file's maximum)."""
    cost = model_cost(facts, settings.kv_bytes_per_token)
    context = facts.context_length or settings.context_length or cost.context_length
    load_context = facts.context_length or settings.context_length or DEFAULT_CONTEXT_LENGTH
    at_load = not facts.is_embedding and not facts.grows_kv_per_token
    return ModelCost(
        cost.model_key,
        cost.weights_bytes,
        cost.kv_bytes_per_token,
        cost.kv_source,
        context or DEFAULT_CONTEXT_LENGTH,
        cost.kv_bytes_per_token * load_context if at_load else 0,
    )


def build_gate(settings: Settings, facts: ModelFacts, lookahead: Lookahead | None = None) -> Gate:
    """The worker's gate (one WARNING line when the host's memory is unknown); `lookahead`
    lets the worker take more jobs while its jobs wait for KV (`lookahead`)."""
    if not settings.admission:
        return NullGate()
    budget = gpu_budget(settings)
    cost = plan_cost(settings, facts)
    client = redis_pool.client(settings.store_url, yields=True)
    usable = UNKNOWN_BUDGET if budget.usable_bytes is None else budget.usable_bytes
    semaphore = GroupSemaphore(client, settings.group, usable, settings.lease_ttl_s)
    if not budget.known:
        log.warning(budget.warning())
    log.info(
        "admission for %s in group %r: budget %s bytes (%s, reserve %s), weights %s, "
        "KV %s bytes/token (%s), context %s, %s slots",
        facts.model_key,
        settings.group,
        "unknown" if budget.usable_bytes is None else f"{budget.usable_bytes:,}",
        budget.detail or budget.source,
        f"{budget.reserve_bytes:,}",
        f"{cost.weights_bytes:,}",
        f"{cost.kv_bytes_per_token:,}",
        cost.kv_source,
        cost.context_length,
        settings.slots,
    )
    return AdmissionGate(
        semaphore,
        cost,
        settings.slots,
        wait_for_fit_on_load=settings.wait_for_fit_on_load,
        is_embedding=facts.is_embedding,
        per_token=facts.grows_kv_per_token,
        retries=settings.job_max_retries,
        backoff_s=settings.job_retry_backoff_s,
        recost=lambda loaded: plan_cost(settings, loaded),
        lookahead=lookahead,
    )


def thread_count(settings: Settings, facts: ModelFacts) -> int:
    """Predictions a worker process runs at once: LMQ_CONCURRENCY if set, else LMQ_SLOTS,
    fewer only when the GPU budget's KV room cannot hold that many short jobs
    (`SHORT_JOB_TOKENS` each).

    The group's semaphore admits each job only when its own KV fits, so the cap is sized by
    a short job, not a "typical" one: an earlier rule sized it by the context shared by the
    slots, and on a model loaded at a 16k context (such a job is 128 MiB, the GPU has 200
    MiB of KV room, so it allowed one prediction) 64 jobs of ~7 MiB reached 0.25 slot
    utilisation, and 0.95 with LMQ_SLOTS (`ops/bench_admission.py`). The worker adds
    LMQ_PREFETCH_THREADS (`workers.lifecycle.worker_threads`) so that it holds jobs behind
    those waiting for memory. Those measurements of more threads (8 or 9 instead of 6: +0.01
    to +0.02 of slot-time on 3/4 big jobs) predate `SlotLimit` taking a process slot only
    once admitted: the extra threads then waited for a process slot, never reaching the
    shared queue. Since, on the 1,024-cell instance, 16 threads reached 0.92 of what the
    cells allow on the 3/4-big flood vs 0.87 with 6 (small jobs backfill beside big ones);
    but more threads hold more jobs all the time, ahead of later jobs of other tenants, so
    the default stays LMQ_SLOTS + LMQ_PREFETCH_THREADS, and the worker takes more jobs only
    while its jobs wait for KV (`lookahead`, LMQ_ADMISSION_LOOKAHEAD). Embedding models,
    admission off
    and an unknown budget (build_gate reports it): LMQ_SLOTS. So are models on LM Studio's
    llama.cpp engine: their KV cache is allocated at load, and jobs take the instance's
    cells (`instance`), not GPU memory; the rule above applies to engines that grow KV per
    token (MLX).
    """
    if settings.concurrency:
        return settings.concurrency
    if not settings.admission or facts.is_embedding or not facts.grows_kv_per_token:
        return settings.slots
    usable = gpu_budget(settings).usable_bytes
    if usable is None:
        return settings.slots
    cost = plan_cost(settings, facts)
    short_job_bytes = max(1, SHORT_JOB_TOKENS * cost.kv_bytes_per_token)
    fits = (usable - cost.weights_bytes) // short_job_bytes
    return max(1, min(settings.slots, fits))
