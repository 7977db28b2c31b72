"""The admission seam between job execution and GPU-memory accounting.

Job runners ask a `Gate` before each prediction; `workers.admission` provides the real one
(GPU-memory-aware, shared through Redis). `NullGate` admits everything (admission off).
`SlotLimit` wraps either: a worker runs more threads than its model has slots (so that the
next jobs are received while the slots predict), and it keeps the predictions of this
process at most `LMQ_SLOTS` whatever the wrapped gate says, without a Redis round trip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from workers import green
from workers.error import JobCancelledError

SLOT_POLL_S = 0.05  # how often a job waiting for a slot checks for its cancel


@dataclass(frozen=True)
class ModelFacts:
    """What a worker knows about its pinned model before and after loading it."""

    model_key: str
    size_bytes: int
    path: str | None = None
    architecture: str | None = None
    context_length: int | None = None
    offload_ratio: float | None = None  # None: LM Studio's default (assume all on GPU)
    is_embedding: bool = False
    # From the load config (LMQ_LOAD_CONFIG): the K and V cache element types (None: f16)
    # and whether the KV cache lives in GPU memory (offloadKVCacheToGpu; None: it does).
    k_cache_type: str | None = None
    v_cache_type: str | None = None
    kv_on_gpu: bool | None = None
    # LM Studio 0.4's engine for the model: "llama.cpp" (GGUF: KV cache for the context
    # allocated at load) or "mlx" (KV grows per token). After loading: the instance's
    # identifier, its parallel predictions (numParallelSessions) and whether its KV cache
    # is unified, as LM Studio reports them (None: it did not say).
    engine: str = "llama.cpp"
    identifier: str | None = None
    parallel: int | None = None
    unified_kv: bool | None = None

    @property
    def grows_kv_per_token(self) -> bool:
        return self.engine == "mlx"


class Gate(Protocol):
    def before_load(self) -> None:
        """Account the model's weights; raise DoesNotFitError (or wait) if they cannot fit."""

    def admit(self, job_id: str, prompt_tokens: int, max_output_tokens: int,
              cancelled: Callable[[], bool], priority: str = "normal",
              ) -> AbstractContextManager[None]:
        """Block until the job's KV cache fits and a slot is free; release on exit. A
        "high" job goes before waiting normal and low ones.

        Raises DoesNotFitError when it can never fit, JobCancelledError if `cancelled()`
        turns true while waiting.
        """

    def loaded(self, facts: ModelFacts) -> None:
        """The model is loaded: its facts as LM Studio reports them (the context length
        clamps reservations; the KV cache types set the bytes per token)."""

    def is_tight(self, prompt_tokens: int, max_output_tokens: int) -> bool:
        """True when GPU memory is short for this job (worth counting its prompt exactly)."""

    def close(self) -> None:
        """Release everything this worker holds (at shutdown)."""


class NullGate:
    """Admission off: admit every job at once."""

    def before_load(self) -> None:
        return None

    @contextmanager
    def _admitted(self) -> Iterator[None]:
        yield

    def admit(self, job_id: str, prompt_tokens: int, max_output_tokens: int,
              cancelled: Callable[[], bool], priority: str = "normal",
              ) -> AbstractContextManager[None]:
        return self._admitted()

    def loaded(self, facts: ModelFacts) -> None:
        return None

    def is_tight(self, prompt_tokens: int, max_output_tokens: int) -> bool:
        return False

    def close(self) -> None:
        return None


class SlotLimit:
    """At most `slots` predictions of this process at once, on top of the wrapped gate.

    Which comes first depends on which limit binds. With LMQ_SLOTS >= the instance's P (as
    LM Studio reports it), the gate's P slots bind and the local slot is taken *after*
    admission: a job waiting for KV cells must not hold one of this process's slots. Taken
    first, the slots filled with big jobs waiting for cells, and the small jobs behind
    them, which would fit beside the running ones, never reached the shared queue where
    admission lets them overtake (`semaphore`'s bypass rule): on `ops/bench_admission.py`'s
    3/4-big flood, 0.20 of slot-time idle while a waiting job fit. With LMQ_SLOTS < P the
    local slots bind, and the local slot is taken *first*: admitted after, a job would
    hold its cells and one of the instance's P slots while it waited here, keeping them
    from the instance's other workers (seen: 4 admitted on an instance with LMQ_SLOTS=2).
    """

    def __init__(self, gate: Gate, slots: int) -> None:
        self.gate = gate
        self.slots = slots
        self._free = threading.BoundedSemaphore(slots)
        self._slot_first = True  # until LM Studio reports the instance's P

    def before_load(self) -> None:
        self.gate.before_load()

    def loaded(self, facts: ModelFacts) -> None:
        self.gate.loaded(facts)
        self._slot_first = facts.parallel is not None and self.slots < facts.parallel

    def is_tight(self, prompt_tokens: int, max_output_tokens: int) -> bool:
        return self.gate.is_tight(prompt_tokens, max_output_tokens)

    def admit(self, job_id: str, prompt_tokens: int, max_output_tokens: int,
              cancelled: Callable[[], bool], priority: str = "normal",
              ) -> AbstractContextManager[None]:
        return self._admitted(job_id, prompt_tokens, max_output_tokens, cancelled, priority)

    @contextmanager
    def _admitted(self, job_id: str, prompt_tokens: int, max_output_tokens: int,
                  cancelled: Callable[[], bool], priority: str) -> Iterator[None]:
        admitted = self.gate.admit(job_id, prompt_tokens, max_output_tokens, cancelled,
                                   priority)
        if self._slot_first:
            with self._local_slot(job_id, cancelled), admitted:
                yield
        else:
            with admitted, self._local_slot(job_id, cancelled):
                yield

    @contextmanager
    def _local_slot(self, job_id: str, cancelled: Callable[[], bool]) -> Iterator[None]:
        while not (self._free.acquire(blocking=False)
                   or green.blocking(self._free.acquire, True, SLOT_POLL_S)):
            if cancelled():
                raise JobCancelledError(f"job {job_id} cancelled while waiting for a slot", None)
        try:
            yield
        finally:
            self._free.release()

    def close(self) -> None:
        self.gate.close()
