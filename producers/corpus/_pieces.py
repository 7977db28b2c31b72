"""Failure per chunk, not per job: a job that fails for one of its inputs is split.

An embedding job carries up to 256 chunks and fails as a whole when one of them cannot be
embedded. When the error is one a single input can cause (`per_input`), the job's chunks
are sent again as two half jobs, and a half that fails the same way is halved again, so
only the chunks that really fail are recorded (about 2·log2(n) jobs for one bad chunk in
n). Errors that are not about an input (LM Studio down or lost, the model not loaded, the
job expired or cancelled, no result in time) never split: the job is retried whole, as
before. A run whose split pieces keep failing with nothing succeeding in between
(`STORM_FAILURES`) stops splitting: an error classified per input that hits every input
(a crashed engine answering every call with an error) must not turn each job into 2n.

`PlanPieces` is what is known of one plan while its pieces are out: the item ranges
written (their part files) or failed for good, until they cover the plan; the output then
gets the written parts in item order, so the rows stay in plan order. Each piece's part
file is named by its range and signature (`RunState.piece`), which is what lets --resume
reuse the pieces of a plan interrupted in the middle of a split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from producers.corpus._plan import JobPlan
from producers.corpus._state import RunState, signature
from workers.error import BadJobError, JobFailedError

# BadJobError: a text over the context (ContextOverflowError), a text LM Studio's SDK
# refused (InvalidJobError); JobFailedError: LM Studio answered one embedString with an
# error (e.g. "Input length N exceeds context length M"). Everything else (TransientError,
# ModelNotAvailableError, JobExpiredError, JobCancelledError, timeouts) is about the job.
PER_INPUT_ERRORS: tuple[type[BaseException], ...] = (BadJobError, JobFailedError)
STORM_FAILURES = 16  # split pieces failing in a row, no success between: stop splitting


def per_input(error: object) -> bool:
    """Can one input of the job have caused `error`?"""
    return isinstance(error, PER_INPUT_ERRORS)


def halves(lo: int, hi: int) -> list[tuple[int, int]]:
    middle = (lo + hi) // 2
    return [(lo, middle), (middle, hi)]


@dataclass
class PlanPieces:
    plan: JobPlan
    settled: dict[int, tuple[int, Path | None]] = field(default_factory=dict)  # lo -> (hi, part)

    def settle(self, lo: int, hi: int, part: Path | None) -> None:
        self.settled[lo] = (hi, part)

    @property
    def complete(self) -> bool:
        return sum(hi - lo for lo, (hi, _) in self.settled.items()) == len(self.plan.items)

    def parts(self) -> list[Path]:
        """The written parts in item order (failed ranges have none)."""
        return [part for _, (_, part) in sorted(self.settled.items()) if part is not None]

    def gaps(self) -> list[tuple[int, int]]:
        """The item ranges not settled yet, in order."""
        found: list[tuple[int, int]] = []
        at = 0
        for lo, (hi, _) in sorted(self.settled.items()):
            if lo > at:
                found.append((at, lo))
            at = max(at, hi)
        if at < len(self.plan.items):
            found.append((at, len(self.plan.items)))
        return found


def part_path(state: RunState, plan: JobPlan, lo: int, hi: int) -> Path:
    """The whole plan's part file, or a piece's (named by its range)."""
    sig = signature([(i, s) for i, s, _ in plan.items[lo:hi]])
    if (lo, hi) == (0, len(plan.items)):
        return state.part(plan.index, sig)
    return state.piece(plan.index, lo, hi, sig)


def resumed_pieces(state: RunState, plan: JobPlan) -> PlanPieces:
    """The pieces of `plan` an interrupted run wrote (checked against their chunks)."""
    pieces = PlanPieces(plan)
    at = 0
    for lo, hi, path in state.pieces(plan.index):
        if lo >= at and hi <= len(plan.items) and path == part_path(state, plan, lo, hi):
            pieces.settle(lo, hi, path)
            at = hi
    return pieces
