"""Send planned jobs with a bounded number in flight; collect results by id.

No chords and no per-task result handles: the in-flight ids are read with one pipelined
`fetch_results` per poll, woken by the result backend's notifications for those ids
(`_signal`); a finished job's rows go to its part file (and on to the output, in job order:
`OrderedOutput`) and its stored result is deleted. Jobs ask for base64 float32 vectors and
carry the chunker's exact token counts. The served check runs alongside the first jobs
(`_served`). A job that failed for one of its inputs is split in halves until only the
chunks that cannot be embedded fail (`_pieces`); any other failed or cancelled job is
retried whole; a job still unfinished after `job_timeout_s` (its worker died, for one) is
revoked and sent again. Chunks still failing after the retries are reported, never
dropped silently. A job that expired (`expires_s`: no worker started it in time) is not
sent again, which would give it a new deadline: its chunks are failed at once with the
reason. With no worker alive nothing would end such a job, so the poll ends it once its
deadline passed (`producers.job_expiry`, as every waiter does).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import states

from producers import job_expiry
from producers.corpus._pieces import (
    STORM_FAILURES,
    PlanPieces,
    halves,
    part_path,
    per_input,
    resumed_pieces,
)
from producers.corpus._plan import JobPlan
from producers.corpus._progress import Progress
from producers.corpus._served import ServedCheck, take_back
from producers.corpus._signal import ResultSignals
from producers.corpus._state import RunState
from producers.corpus._writer import (
    OrderedOutput,
    base64_vectors,
    float_vectors,
    rows_table,
    write_part,
)
from producers.outcome import payload_of
from workers.contract import EmbeddingJob
from workers.error import JobExpiredError, ModelNotServedError

POLL_MIN_S = 0.02
POLL_MAX_S = 0.5  # with result notifications: the longest wait between two reads


@dataclass
class Flight:
    """One job on its way: items lo..hi of its plan (all of them unless it was split)."""

    plan: JobPlan
    part: Any
    lo: int = 0
    hi: int = -1  # -1: len(plan.items)
    job_id: str = ""
    attempt: int = 0
    sent_at: float = 0.0
    expires_at: float | None = None  # epoch s: ended as expired if still unstarted then

    def __post_init__(self) -> None:
        if self.hi < 0:
            self.hi = len(self.plan.items)

    @property
    def items(self) -> list[Any]:
        return self.plan.items[self.lo : self.hi]


@dataclass
class DispatchResult:
    embedded_chunks: int = 0
    embedded_tokens: int = 0
    resumed_chunks: int = 0
    retried_jobs: int = 0
    split_jobs: int = 0  # jobs that failed for one of their chunks, sent again as halves
    failed: list[tuple[JobPlan, str]] = field(default_factory=list)
    tokens_estimated: bool = False  # some token counts are the chunker's estimates


@dataclass
class DispatchOptions:
    model: str
    max_in_flight: int = 8
    retries: int = 2
    job_timeout_s: float = 300.0
    enqueue_anyway: bool = False
    batch_id: str | None = None
    # False: workers skip LM Studio's count per text (1 RPC instead of 2), guarding the
    # context with a local bound; the tokens column then holds the chunker's figures.
    exact_token_counts: bool = True
    priority: str = "low"  # bulk work: interactive jobs go first
    expires_s: float | None = None  # per job: never start it later than this after sending
    time_limit_s: float | None = None  # per job: cancel it this long after it started


class Dispatcher:
    def __init__(self, queue: Any, state: RunState, options: DispatchOptions,
                 progress: Progress, output: OrderedOutput) -> None:
        self.queue = queue
        self.output = output
        self.state = state
        self.options = options
        self.progress = progress
        self.flights: dict[str, Flight] = {}
        self.retry: deque[Flight] = deque()  # retried, split or resumed pieces: sent first
        self.plans: dict[int, PlanPieces] = {}  # plans whose pieces are not all settled
        self.result = DispatchResult()
        self._failing_pieces = 0  # split pieces failed since the last success (STORM_FAILURES)
        self._poll_s = POLL_MIN_S
        self._served: ServedCheck | None = None
        self._signals = ResultSignals(queue)
        self._exhausted: Callable[[], bool] = lambda: False

    def run(self, next_plan: Callable[[float], JobPlan | None], exhausted: Callable[[], bool]
            ) -> DispatchResult:
        """Drive jobs until the plan is exhausted and nothing is in flight."""
        self._exhausted = exhausted
        try:
            while True:
                self._fill(next_plan)
                if not self.flights and not self.retry:
                    if exhausted():
                        return self.result
                    self._fill(next_plan, wait_s=0.2)
                    continue
                self._poll()
        except BaseException:
            self._abandon()
            raise
        finally:
            self._signals.close()

    def _fill(self, next_plan: Callable[[float], JobPlan | None], wait_s: float = 0.0) -> None:
        batch: list[Flight] = []
        while len(self.flights) + len(batch) < self.options.max_in_flight:
            flight = self.retry.popleft() if self.retry else self._new_flight(next_plan, wait_s)
            if flight is None:
                break
            wait_s = 0.0
            batch.append(flight)
        if batch:
            self._send(batch)

    def _new_flight(self, next_plan: Callable[[float], JobPlan | None],
                    wait_s: float) -> Flight | None:
        while (plan := next_plan(wait_s)) is not None:
            part = part_path(self.state, plan, 0, len(plan.items))
            if self.state.written_before(part):
                self._resumed(plan.index, len(plan.items), part)
                continue
            pieces = resumed_pieces(self.state, plan)
            if not pieces.settled:
                self.plans[plan.index] = pieces
                return Flight(plan, part)
            # interrupted in the middle of a split: the pieces written are kept
            done = len(plan.items) - sum(hi - lo for lo, hi in pieces.gaps())
            self.result.resumed_chunks += done
            self.progress.advance(done, 0)
            self.plans[plan.index] = pieces
            self.retry.extend(self._piece(plan, lo, hi) for lo, hi in pieces.gaps())
            return self.retry.popleft()
        return None

    def _resumed(self, index: int, chunks: int, part: Any) -> None:
        self.result.resumed_chunks += chunks
        self.output.ready(index, part)
        self.progress.advance(chunks, 0)

    def _piece(self, plan: JobPlan, lo: int, hi: int) -> Flight:
        return Flight(plan, part_path(self.state, plan, lo, hi), lo, hi)

    def _send(self, batch: list[Flight]) -> None:
        jobs = [EmbeddingJob(model=self.options.model, batch_id=self.options.batch_id,
                             submitted_at=None, priority=self.options.priority,
                             exact_token_counts=self.options.exact_token_counts,
                             expires_s=self.options.expires_s,
                             time_limit_s=self.options.time_limit_s,
                             encoding_format="base64", token_counts=_counts(f.items),
                             texts=[chunk.text for _, _, chunk in f.items]) for f in batch]
        ids = [uuid.uuid4().hex for _ in batch]
        if not self.options.enqueue_anyway:  # checked once, alongside the first jobs
            self._served = ServedCheck(self.queue, self.options.model)
            self.options.enqueue_anyway = True
        self._signals.watch(ids)
        self.queue.submit_many(jobs, job_ids=ids, enqueue_anyway=True)
        now = time.monotonic()
        expires_at = (None if self.options.expires_s is None
                      else time.time() + self.options.expires_s)
        for flight, job_id in zip(batch, ids, strict=True):
            flight.job_id, flight.sent_at, flight.attempt = job_id, now, flight.attempt + 1
            flight.expires_at = expires_at
            self.flights[job_id] = flight

    def _poll(self) -> None:
        found = self._states()
        finished = 0
        now = time.monotonic()
        self._check_served(found)
        for job_id, (state, payload) in found.items():
            flight = self.flights[job_id]
            if state == states.PENDING and job_expiry.is_past(flight.expires_at):
                state, payload = self._expire(flight)
            if state == states.SUCCESS:
                finished += self._complete(flight, payload)
            elif isinstance(payload, JobExpiredError):
                finished += self._failed(flight, f"{state}: {payload}", final=True)
            elif state in (states.FAILURE, states.REVOKED):
                split = state == states.FAILURE and per_input(payload)
                finished += self._failed(flight, f"{state}: {payload}", split=split)
            elif now - flight.sent_at > self.options.job_timeout_s:
                self._revoke([job_id])
                finished += self._failed(flight, f"no result after {self.options.job_timeout_s:g}s")
        self._poll_s = POLL_MIN_S if finished else min(self._poll_s * 1.5, POLL_MAX_S)
        if not finished:
            self._signals.wait(self._wait_s())

    def _states(self) -> dict[str, tuple[str, Any]]:
        """(state, payload) of every job in flight: a SUCCESS its job published as it stored
        it (`_signal`), else what one MGET reads."""
        published = self.queue.decode_results(self._signals.published())
        done = {job_id: found for job_id, found in published.items()
                if found[0] == states.SUCCESS and job_id in self.flights}
        read = self.queue.fetch_results([job_id for job_id in self.flights if job_id not in done])
        return {**read, **done}

    def _expire(self, flight: Flight) -> tuple[str, Any]:
        """End a job still unstarted past its deadline; (state, payload) as it now stands."""
        meta = job_expiry.expire_unstarted(self.queue.app, self.queue.backend_client,
                                           flight.job_id, flight.expires_at or 0.0)
        if meta is None:  # not a Redis result backend: the worker decides when it takes it
            flight.expires_at = None
            return states.PENDING, None
        state = str(meta.get("status", states.PENDING))
        return state, payload_of(flight.job_id, state, meta.get("result"))

    def _wait_s(self) -> float:
        """Until the next read: long when only a result can change anything."""
        room = len(self.flights) < self.options.max_in_flight and not self._exhausted()
        return self._poll_s if room or self._served is not None else POLL_MAX_S

    def _check_served(self, found: dict[str, tuple[str, Any]]) -> None:
        if self._served is None:
            return
        if any(state != states.PENDING for state, _ in found.values()):
            self._served.confirm()
            self._served = None
            return
        try:
            self._served.raise_if_not_served()
        except ModelNotServedError:
            take_back(self.queue, self.options.model, list(self.flights))
            raise

    def _complete(self, flight: Flight, payload: dict[str, Any]) -> int:
        items = flight.items
        try:
            vectors = _vectors(payload)
        except (ValueError, TypeError) as exc:
            return self._failed(flight, f"unreadable vectors: {exc}")
        if payload.get("cancelled") or len(vectors) != len(items):
            return self._failed(flight, f"incomplete result ({len(vectors)} vectors)")
        counts = payload.get("token_counts") or []
        if payload.get("token_counts_exact") is False:  # upper bounds: the chunker knows better
            counts, self.result.tokens_estimated = [], True
        if len(counts) != len(vectors):
            counts = [chunk.tokens for _, _, chunk in items]
        write_part(flight.part, rows_table(items, self.options.model, vectors, counts))
        self._forget(flight.job_id)
        del self.flights[flight.job_id]
        self._failing_pieces = 0
        self._settle(flight, flight.part)
        self.result.embedded_chunks += len(items)
        self.result.embedded_tokens += sum(counts)
        self.progress.advance(len(items), sum(counts))
        return 1

    def _failed(self, flight: Flight, error: str, split: bool = False,
                final: bool = False) -> int:
        """Split, retry, or (after the retries, or `final`) list the job's chunks as failed."""
        self._forget(flight.job_id)
        del self.flights[flight.job_id]
        if final:
            self.result.failed.append((JobPlan(flight.plan.index, flight.items), error))
            self._settle(flight, None)
        elif split and flight.hi - flight.lo > 1 and self._failing_pieces < STORM_FAILURES:
            self.result.split_jobs += 1
            self._failing_pieces += flight.lo != 0 or flight.hi != len(flight.plan.items)
            self.retry.extend(self._piece(flight.plan, lo, hi)
                              for lo, hi in halves(flight.lo, flight.hi))
        elif flight.attempt <= self.options.retries:
            self.result.retried_jobs += 1
            self.retry.append(flight)
        else:
            self.result.failed.append((JobPlan(flight.plan.index, flight.items), error))
            self._settle(flight, None)
        return 1

    def _settle(self, flight: Flight, part: Any) -> None:
        """Items lo..hi are written (or failed for good); the plan goes out once all are."""
        pieces = self.plans[flight.plan.index]
        pieces.settle(flight.lo, flight.hi, part)
        if pieces.complete:
            del self.plans[flight.plan.index]
            self.output.ready(flight.plan.index, pieces.parts())

    def _forget(self, job_id: str) -> None:
        self._signals.forget([job_id])
        self.queue.forget([job_id])

    def _revoke(self, job_ids: list[str]) -> None:
        if job_ids:
            self.queue.app.control.revoke(job_ids)

    def _abandon(self) -> None:
        """Interrupted: revoke what is in flight (best effort); parts written are kept."""
        with contextlib.suppress(Exception):  # the broker may be what failed
            self._revoke(list(self.flights))


def _vectors(payload: dict[str, Any]) -> Any:
    """The result's vectors as one Arrow array (base64 float32, or float lists)."""
    packed = payload.get("vectors_base64") or []
    if packed:
        return base64_vectors(packed, int(payload.get("dimension") or 0))
    floats = payload.get("vectors") or []
    return float_vectors(floats) if floats else []


def _counts(items: list[Any]) -> list[int | None] | None:
    """The exact counts the chunker has (the worker need not count those texts again)."""
    counts = [chunk.tokens if chunk.counted else None for _, _, chunk in items]
    return counts if any(count is not None for count in counts) else None
