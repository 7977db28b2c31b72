"""GPU-memory-aware admission: the real `Gate`, and how many threads a worker runs.

    build_gate(settings, facts)    AdmissionGate (NullGate when LMQ_ADMISSION=false)
    thread_count(settings, facts)  the worker's thread count (rule below)
    status.group_status(url, g)    what `lmq gpu` shows; reusable by `lmq workers`, metrics

Modules: `gguf_kv` (KV bytes/token from a GGUF header), `estimate` (weights and KV cost,
fallbacks), `budget` (GPU memory minus reserve), `semaphore` + `lua` (the shared weighted
semaphore and its admission rule), `gate` (AdmissionGate), `status` (read side).
"""

from __future__ import annotations

import logging
import math

import redis

from workers.admission.budget import Budget, gpu_budget
from workers.admission.estimate import ModelCost, model_cost
from workers.admission.gate import AdmissionGate
from workers.admission.semaphore import GroupSemaphore
from workers.error import BudgetUnknownError
from workers.gate import Gate, ModelFacts, NullGate
from workers.settings import Settings

__all__ = [
    "AdmissionGate",
    "Budget",
    "BudgetUnknownError",
    "build_gate",
    "plan_cost",
    "thread_count",
]

log = logging.getLogger(__name__)

# LM Studio's usual context length when neither the worker nor the settings say.
DEFAULT_CONTEXT_LENGTH = 4096


def plan_cost(settings: Settings, facts: ModelFacts) -> ModelCost:
    """The model's cost, with the context length resolved: loaded, setting, GGUF, 4096."""
    cost = model_cost(facts, settings.kv_bytes_per_token)
    context = facts.context_length or settings.context_length or cost.context_length
    return ModelCost(
        cost.model_key,
        cost.weights_bytes,
        cost.kv_bytes_per_token,
        cost.kv_source,
        context or DEFAULT_CONTEXT_LENGTH,
    )


def build_gate(settings: Settings, facts: ModelFacts) -> Gate:
    """The worker's gate; raises BudgetUnknownError when the GPU memory is unknown."""
    if not settings.admission:
        return NullGate()
    budget = gpu_budget(settings)
    cost = plan_cost(settings, facts)
    client = redis.Redis.from_url(settings.store_url)
    semaphore = GroupSemaphore(client, settings.group, budget.usable_bytes, settings.lease_ttl_s)
    log.info(
        "admission for %s in group %r: budget %s bytes (%s, reserve %s), weights %s, "
        "KV %s bytes/token (%s), context %s, %s slots",
        facts.model_key,
        settings.group,
        f"{budget.usable_bytes:,}",
        budget.source,
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
        retries=settings.job_max_retries,
        backoff_s=settings.job_retry_backoff_s,
    )


def thread_count(settings: Settings, facts: ModelFacts) -> int:
    """Worker threads: LMQ_CONCURRENCY if set, else slots, fewer when memory is short.

    With admission on, a "typical" job is taken as the model's context shared by its slots
    (context_length / slots tokens of KV, as llama.cpp splits a context among parallel
    sessions). Threads = clamp((budget - weights) // that job's bytes, 1, slots): more
    threads than can run at once would only hold prefetched jobs that other workers could
    take. Embedding models and admission off: slots. Unknown budget: slots (build_gate
    reports the error).
    """
    if settings.concurrency:
        return settings.concurrency
    if not settings.admission or facts.is_embedding:
        return settings.slots
    try:
        budget = gpu_budget(settings)
    except BudgetUnknownError:
        return settings.slots
    cost = plan_cost(settings, facts)
    context = cost.context_length or DEFAULT_CONTEXT_LENGTH
    job_bytes = math.ceil(context / settings.slots) * cost.kv_bytes_per_token
    kv_room = budget.usable_bytes - cost.weights_bytes
    return max(1, min(settings.slots, kv_room // max(1, job_bytes)))
