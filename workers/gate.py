"""The admission seam between job execution and GPU-memory accounting.

Job runners ask a `Gate` before each prediction; `workers.admission` provides the real one
(GPU-memory-aware, shared through Redis). `NullGate` admits everything (admission off).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol


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


class Gate(Protocol):
    def before_load(self) -> None:
        """Account the model's weights; raise DoesNotFitError (or wait) if they cannot fit."""

    def admit(self, job_id: str, prompt_tokens: int, max_output_tokens: int,
              cancelled: Callable[[], bool]) -> AbstractContextManager[None]:
        """Block until the job's KV cache fits and a slot is free; release on exit.

        Raises DoesNotFitError when it can never fit, JobCancelledError if `cancelled()`
        turns true while waiting.
        """

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
              cancelled: Callable[[], bool]) -> AbstractContextManager[None]:
        return self._admitted()

    def close(self) -> None:
        return None
