"""Send planned jobs with a bounded number in flight; collect results by id.

No chords and no per-task result handles: the in-flight ids are read with one pipelined
`fetch_results` per poll, woken by the result backend's notifications for those ids
(`_signal`); a finished job's rows go to its part file (and on to the output, in job order:
`OrderedOutput`) and its stored result is deleted. Jobs ask for base64 float32 vectors and
carry the chunker's exact token counts. The served check runs alongside the first jobs
(`_served`). A failed or cancelled job is retried; a job still unfinished after
`job_timeout_s` (its worker died, for one) is revoked and sent again. Chunks still failing
after the retries are reported, never dropped silently.
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

from producers.corpus._plan import JobPlan
from producers.corpus._progress import Progress
from producers.corpus._served import ServedCheck, take_back
from producers.corpus._signal import ResultSignals
from producers.corpus._state import RunState, signature
from producers.corpus._writer import (
    OrderedOutput,
    base64_vectors,
    float_vectors,
    rows_table,
    write_part,
)
from workers.contract import EmbeddingJob
from workers.error import ModelNotServedError

POLL_MIN_S = 0.02
POLL_MAX_S = 0.5  # with result notifications: the longest wait between two reads


@dataclass
class Flight:
    plan: JobPlan
    part: Any
    job_id: str = ""
    attempt: int = 0
    sent_at: float = 0.0


@dataclass
class DispatchResult:
    embedded_chunks: int = 0
    embedded_tokens: int = 0
    resumed_chunks: int = 0
    retried_jobs: int = 0
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


class Dispatcher:
    def __init__(self, queue: Any, state: RunState, options: DispatchOptions,
                 progress: Progress, output: OrderedOutput) -> None:
        self.queue = queue
        self.output = output
        self.state = state
        self.options = options
        self.progress = progress
        self.flights: dict[str, Flight] = {}
        self.retry: deque[Flight] = deque()
        self.result = DispatchResult()
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
            part = self.state.part(plan.index, signature([(i, s) for i, s, _ in plan.items]))
            if not part.exists():
                return Flight(plan, part)
            self.result.resumed_chunks += len(plan.items)
            self.output.ready(plan.index, part)
            self.progress.advance(len(plan.items), 0)
        return None

    def _send(self, batch: list[Flight]) -> None:
        jobs = [EmbeddingJob(model=self.options.model, batch_id=self.options.batch_id,
                             submitted_at=None, priority=self.options.priority,
                             exact_token_counts=self.options.exact_token_counts,
                             encoding_format="base64", token_counts=_counts(f.plan),
                             texts=[chunk.text for _, _, chunk in f.plan.items]) for f in batch]
        ids = [uuid.uuid4().hex for _ in batch]
        if not self.options.enqueue_anyway:  # checked once, alongside the first jobs
            self._served = ServedCheck(self.queue, self.options.model)
            self.options.enqueue_anyway = True
        self._signals.watch(ids)
        self.queue.submit_many(jobs, job_ids=ids, enqueue_anyway=True)
        now = time.monotonic()
        for flight, job_id in zip(batch, ids, strict=True):
            flight.job_id, flight.sent_at, flight.attempt = job_id, now, flight.attempt + 1
            self.flights[job_id] = flight

    def _poll(self) -> None:
        found = self.queue.fetch_results(list(self.flights))
        finished = 0
        now = time.monotonic()
        self._check_served(found)
        for job_id, (state, payload) in found.items():
            flight = self.flights[job_id]
            if state == states.SUCCESS:
                finished += self._complete(flight, payload)
            elif state in (states.FAILURE, states.REVOKED):
                finished += self._failed(flight, f"{state}: {payload}")
            elif now - flight.sent_at > self.options.job_timeout_s:
                self._revoke([job_id])
                finished += self._failed(flight, f"no result after {self.options.job_timeout_s:g}s")
        self._poll_s = POLL_MIN_S if finished else min(self._poll_s * 1.5, POLL_MAX_S)
        if not finished:
            self._signals.wait(self._wait_s())

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
        items = flight.plan.items
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
        self.output.ready(flight.plan.index, flight.part)
        self._forget(flight.job_id)
        del self.flights[flight.job_id]
        self.result.embedded_chunks += len(items)
        self.result.embedded_tokens += sum(counts)
        self.progress.advance(len(items), sum(counts))
        return 1

    def _failed(self, flight: Flight, error: str) -> int:
        self._forget(flight.job_id)
        del self.flights[flight.job_id]
        if flight.attempt <= self.options.retries:
            self.result.retried_jobs += 1
            self.retry.append(flight)
        else:
            self.result.failed.append((flight.plan, error))
            self.output.ready(flight.plan.index, None)
        return 1

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


def _counts(plan: JobPlan) -> list[int | None] | None:
    """The exact counts the chunker has (the worker need not count those texts again)."""
    counts = [chunk.tokens if chunk.counted else None for _, _, chunk in plan.items]
    return counts if any(count is not None for count in counts) else None
