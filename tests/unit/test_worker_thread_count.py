"""The worker's thread count and the loaded context length (no network)."""

from __future__ import annotations

from workers.admission.estimate import ModelCost
from workers.admission.gate import AdmissionGate
from workers.admission.seam import ModelFacts
from workers.lifecycle import worker_threads
from workers.settings import Settings

KV = 2 * 16 * 8 * 64 * 2  # the simulator's llama-3.2-1b: bytes per token
WEIGHTS = 807_694_464
GIB = 1 << 30


def facts(context: int | None) -> ModelFacts:
    """On an engine that grows KV per token (MLX): the only case GPU memory sizes threads."""
    return ModelFacts(model_key="llama-3.2-1b-instruct", size_bytes=WEIGHTS,
                      context_length=context, engine="mlx")


def settings(**values: object) -> Settings:
    return Settings(kv_bytes_per_token=KV, slots=4, prefetch_threads=2, **values)  # type: ignore[arg-type]


def test_a_small_budget_keeps_every_slot() -> None:
    """Admission admits each job by its own KV: a budget with room for two slot-sized
    contexts (or none of the max context) still runs LMQ_SLOTS small jobs at once."""
    room = 80 * (1 << 20)  # KV for two 1024-token slot contexts, not three
    small = settings(gpu_memory=GIB + WEIGHTS + room)
    assert worker_threads(small, facts(4096)) == 4 + 2
    assert worker_threads(small, facts(131072)) == 4 + 2
    assert worker_threads(settings(gpu_memory=24 * GIB), facts(4096)) == 4 + 2


def test_a_budget_too_small_for_every_slot_lowers_the_predictions() -> None:
    """Thread count follows from the budget too: room for two short (256-token) jobs."""
    from workers.admission import SHORT_JOB_TOKENS

    two_short_jobs = settings(gpu_memory=GIB + WEIGHTS + 2 * SHORT_JOB_TOKENS * KV)
    assert worker_threads(two_short_jobs, facts(4096)) == 2 + 2


def test_concurrency_and_admission_off_override() -> None:
    assert worker_threads(settings(concurrency=9, gpu_memory=GIB), facts(4096)) == 9
    assert worker_threads(settings(admission=False), facts(4096)) == 4 + 2


def test_the_gate_clamps_to_the_loaded_context() -> None:
    gate = AdmissionGate(None, ModelCost("m", WEIGHTS, KV, "setting", 131072), 4)  # type: ignore[arg-type]
    gate.loaded(ModelFacts("m", WEIGHTS, context_length=4096))
    assert gate.job_tokens(10, 0) == 4096 and gate.job_tokens(10, 100_000) == 4096
