"""AdmissionGate: the Gate of `workers.admission.seam`, in two layers of Redis semaphores.

Per loaded instance (`instance`): a job reserves prompt + max output tokens of its KV cells
and one of its P parallel slots, shared by every worker of that instance. Per host (the
group's semaphore): the model's load holds its weights and, on llama.cpp, its KV cache for
n_ctx cells (allocated at load); on an engine that grows KV per token (MLX) each job also
holds its KV bytes there. Before the model is loaded, and for embedding models, jobs take
the host layer only (KV bytes and the model's slots), as below.

A job reserves KV for `prompt_tokens + max_output_tokens` tokens. When the job sets no
max_tokens, the worker passes `max_output_tokens <= 0` (or the context minus the prompt):
in the instance layer the job then reserves all that one sequence can hold, n_ctx_seq
(`_instance_tokens`); in the host layer up to the model's context length: LM Studio may
generate until the sequence's context is full. Reservations are capped at the context length when it
is known (a prediction cannot hold more KV than its context).

A Redis blip (redis.ConnectionError / TimeoutError) while admitting is retried in place,
`retries` times with a doubling pause from `backoff_s` (a cancel ends the wait); then it
surfaces as AdmissionUnavailableError, a TransientError. One at release is only logged:
the job is done, and its lease expires by itself (LMQ_LEASE_TTL_S).

Embedding models keep no KV cache between requests: an embedding job reserves only a slot
(plus `prompt_tokens` of KV if the worker passes any; max_output_tokens is ignored).

A job that waits because its KV does not fit lets the worker take one more job from the
broker (`lookahead`), so that smaller jobs behind it can be admitted beside the running
ones; a high-priority job queues ahead of normal and low ones (`semaphore`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace

import redis

from workers import green
from workers.admission.estimate import ModelCost
from workers.admission.instance import InstanceShape, instance_group
from workers.admission.lookahead import Lookahead
from workers.admission.seam import ModelFacts
from workers.admission.semaphore import GroupSemaphore, Ticket
from workers.error import AdmissionUnavailableError, DoesNotFitError, JobCancelledError

REDIS_BLIPS = (redis.ConnectionError, redis.TimeoutError)
POLL_S = 0.05


def _wait_cancellable(delay_s: float, cancelled: Callable[[], bool]) -> bool:
    """Sleep `delay_s`; True as soon as `cancelled()` turns true."""
    if green.in_job_greenlet():
        return green.blocking(_wait_cancellable, delay_s, cancelled)
    deadline = time.monotonic() + delay_s
    while time.monotonic() < deadline:
        if cancelled():
            return True
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
    return cancelled()

log = logging.getLogger(__name__)


def reserved_tokens(prompt_tokens: int, max_output_tokens: int, context_length: int | None) -> int:
    """Tokens of KV a job reserves (rule in the module docstring)."""
    prompt_tokens = max(0, prompt_tokens)
    if max_output_tokens <= 0:
        if context_length is None:
            raise ValueError("max_output_tokens unset and the context length is unknown")
        return max(prompt_tokens, context_length)
    total = prompt_tokens + max_output_tokens
    return total if context_length is None else min(total, max(context_length, prompt_tokens))


class AdmissionGate:
    """GPU-memory-aware admission for one worker's pinned model."""

    def __init__(
        self,
        semaphore: GroupSemaphore,
        cost: ModelCost,
        slots: int,
        *,
        wait_for_fit_on_load: bool = False,
        is_embedding: bool = False,
        per_token: bool = False,
        retries: int = 3,
        backoff_s: float = 1.0,
        recost: Callable[[ModelFacts], ModelCost] | None = None,
        lookahead: Lookahead | None = None,
    ) -> None:
        self.semaphore = semaphore
        self.cost = cost
        self.slots = slots
        self.wait_for_fit_on_load = wait_for_fit_on_load
        self.is_embedding = is_embedding
        self.per_token = per_token
        self.retries = retries
        self.backoff_s = backoff_s
        self.recost = recost
        self.lookahead = lookahead or Lookahead(0)
        self._load: Ticket | None = None
        self.shape: InstanceShape | None = None  # set once loaded (LLMs)
        self.instance: GroupSemaphore | None = None

    def job_tokens(self, prompt_tokens: int, max_output_tokens: int) -> int:
        """Tokens of KV the job reserves (rules in the module docstring)."""
        if self.is_embedding:
            return max(0, prompt_tokens)
        return reserved_tokens(prompt_tokens, max_output_tokens, self.cost.context_length)

    def is_tight(self, prompt_tokens: int, max_output_tokens: int) -> bool:
        """True when this job's reservation would not fit what was last seen free (the
        instance's cells, the host's memory for per-token KV): then an exact prompt count
        (instead of the local upper bound) is worth its round trip, because a smaller
        reservation may be admitted sooner. Also when the job would need more than one
        sequence holds: it is refused at once, and only on an exact count (a bound of 1
        token per UTF-8 byte refused a 160-token prompt on 256-cell sequences)."""
        if self.instance is not None and self.shape is not None:
            if not self._unbounded(prompt_tokens, max_output_tokens) and (
                    max(0, prompt_tokens) + max_output_tokens > self.shape.seq_cells):
                return True
            tokens = self._instance_tokens(prompt_tokens, max_output_tokens)
            cells = self.instance.last_free_bytes  # in cells for this semaphore
            if cells is not None and tokens > cells:
                return True
            if not self.per_token:
                return False
        free = self.semaphore.last_free_bytes
        nbytes = self.job_tokens(prompt_tokens, max_output_tokens) * self.cost.kv_bytes_per_token
        return free is not None and nbytes > free

    def before_load(self) -> None:
        """Hold the model's weights in the group budget (DoesNotFitError or wait)."""
        if self._load is not None:
            return
        weights = self.cost.weights_bytes + self.cost.load_kv_bytes
        label = f"model {self.cost.model_key!r} ({self._load_what()})"
        if self.semaphore.budget_known and weights > self.semaphore.budget_bytes:
            raise DoesNotFitError(
                f"{label} can never fit GPU group {self.semaphore.group!r}: budget "
                f"{self.semaphore.budget_bytes:,} bytes; lower LMQ_GPU_OFFLOAD or raise "
                "LMQ_GPU_MEMORY"
            )
        ticket = Ticket("load", self.cost.model_key, weights, label=label)
        self._load = self.semaphore.acquire(ticket, wait=self.wait_for_fit_on_load)
        log.info("admission: %s held in group %r", label, self.semaphore.group)

    def _load_what(self) -> str:
        kv, per_token = self.cost.load_kv_bytes, max(1, self.cost.kv_bytes_per_token)
        return (f"{self.cost.weights_bytes:,} bytes of weights on GPU"
                + (f" + {kv:,} bytes of KV cache for {kv // per_token:,} cells" if kv else ""))

    def loaded(self, facts: ModelFacts) -> None:
        """Reservations clamp to the context the model was actually loaded with, and count
        KV bytes with the cache types it was loaded with (`recost`, when given); an LLM's
        jobs then take its instance's cells (`instance`)."""
        if self.recost is not None:
            kv = self.recost(facts)
            if kv.kv_bytes_per_token != self.cost.kv_bytes_per_token:
                log.info("admission: %s loaded with %s KV bytes/token (%s)",
                         facts.model_key, f"{kv.kv_bytes_per_token:,}", kv.kv_source)
            self.cost = replace(self.cost, kv_bytes_per_token=kv.kv_bytes_per_token,
                                kv_source=kv.kv_source, load_kv_bytes=kv.load_kv_bytes)
        if facts.context_length:
            self.cost = replace(self.cost, context_length=facts.context_length)
        self._hold_load_as_loaded()
        if self.is_embedding or not facts.context_length or not facts.identifier:
            return  # no instance to share: jobs stay on the host layer
        self.shape = InstanceShape.of(facts, self.slots)
        client, group = self.semaphore.client, self.semaphore.group
        ttl_s = self.semaphore.ttl_s
        self.instance = GroupSemaphore(client, instance_group(group, self.shape.identifier),
                                       self.shape.cells, ttl_s)
        shape = self.shape
        self.shape.publish(client, group, ttl_s)
        self.instance.beat_hooks.append(lambda: shape.publish(client, group, ttl_s))
        self.instance.start_heartbeat()
        log.info("admission: %s", self.shape.describe())

    def _hold_load_as_loaded(self) -> None:
        """Swap the load ticket for one of the loaded size (its real context's KV)."""
        old = self._load
        nbytes = self.cost.weights_bytes + self.cost.load_kv_bytes
        if old is None or old.nbytes == nbytes:
            return
        label = f"model {self.cost.model_key!r} ({self._load_what()})"
        try:
            self._load = self.semaphore.acquire(
                Ticket("load", self.cost.model_key, nbytes, label=label), wait=False)
        except DoesNotFitError as exc:  # LM Studio has loaded it: it is using that memory
            log.warning("admission: %s; keeping the load estimate of %s bytes", exc,
                        f"{old.nbytes:,}")
            return
        self.semaphore.release(old.id)

    def admit(
        self, job_id: str, prompt_tokens: int, max_output_tokens: int,
        cancelled: Callable[[], bool], priority: str = "normal",
    ) -> AbstractContextManager[None]:
        return self._admitted(job_id, prompt_tokens, max_output_tokens, cancelled,
                              priority == "high")

    def _unbounded(self, prompt_tokens: int, max_output_tokens: int) -> bool:
        """No max output, or one that runs to the end of the context (the job runners pass
        context - prompt for a job without max_tokens)."""
        assert self.shape is not None
        context = self.cost.context_length or self.shape.cells  # n_ctx
        return max_output_tokens <= 0 or max(0, prompt_tokens) + max_output_tokens >= context

    def _instance_tokens(self, prompt_tokens: int, max_output_tokens: int) -> int:
        """Cells a job reserves: prompt + max output, at most n_ctx_seq (what one sequence
        can hold: llama.cpp stops a sequence there, "contextLengthReached", or shifts its
        context within it; either way it never holds more). Unbounded (`_unbounded`): all
        of n_ctx_seq, which with a unified cache is the whole of it, n_ctx.

        That runs jobs without max_tokens one at a time on a unified cache, and it has to:
        such a job may generate until its sequence is full, and any other sequence then
        finds no free cell and fails. An earlier rule reserved an even share, n_ctx / P:
        four such jobs with 400-token replies on 1,024 unified cells were all admitted and
        failed with "failed to find a memory slot" (test_admission_workers). Without a
        unified cache n_ctx_seq is n_ctx / P, so they still run P at once; with one, only
        max_tokens lets them share it."""
        assert self.shape is not None
        if self._unbounded(prompt_tokens, max_output_tokens):
            return self.shape.seq_cells
        return min(max(0, prompt_tokens) + max_output_tokens, self.shape.seq_cells)

    @contextmanager
    def _admitted(
        self, job_id: str, prompt_tokens: int, max_output_tokens: int,
        cancelled: Callable[[], bool], high: bool,
    ) -> Iterator[None]:
        if self.instance is not None and self.shape is not None:
            with self._instance_admitted(job_id, prompt_tokens, max_output_tokens, cancelled,
                                         high):
                yield
            return
        tokens = self.job_tokens(prompt_tokens, max_output_tokens)
        with self._host_admitted(job_id, tokens, self.slots, cancelled, high):
            yield

    @contextmanager
    def _instance_admitted(
        self, job_id: str, prompt_tokens: int, max_output_tokens: int,
        cancelled: Callable[[], bool], high: bool,
    ) -> Iterator[None]:
        """The instance's cells and slot; per-token engines also the host's bytes."""
        assert self.instance is not None and self.shape is not None
        # What the job needs at least: its prompt and one token, or with max_tokens all of it.
        prompt = max(0, prompt_tokens)
        unbounded = self._unbounded(prompt_tokens, max_output_tokens)
        self.shape.check_fits(f"job {job_id}",
                              prompt + 1 if unbounded else prompt + max_output_tokens)
        tokens = self._instance_tokens(prompt_tokens, max_output_tokens)
        label = f"job {job_id} ({tokens:,} tokens)"
        ticket = Ticket("job", self.cost.model_key, tokens, self.shape.parallel, label,
                        high=high)
        held = self._acquire(ticket, cancelled, self.instance)
        try:
            if self.per_token:
                with self._host_admitted(job_id, tokens, self.shape.parallel, cancelled, high):
                    yield
            else:
                yield
        finally:
            self._release(self.instance, held)

    @contextmanager
    def _host_admitted(self, job_id: str, tokens: int, slots: int,
                       cancelled: Callable[[], bool], high: bool = False) -> Iterator[None]:
        nbytes = tokens * self.cost.kv_bytes_per_token
        label = f"job {job_id} ({tokens:,} tokens x {self.cost.kv_bytes_per_token:,} bytes/token)"
        held = self._acquire(Ticket("job", self.cost.model_key, nbytes, slots, label, high=high),
                             cancelled)
        try:
            yield
        finally:
            self._release(self.semaphore, held)

    def _release(self, semaphore: GroupSemaphore, held: Ticket) -> None:
        try:
            semaphore.release(held.id)
        except REDIS_BLIPS as exc:
            log.warning("admission: %s not released (%s); its lease expires by itself",
                        held.label, exc)

    def _acquire(self, ticket: Ticket, cancelled: Callable[[], bool],
                 semaphore: GroupSemaphore | None = None) -> Ticket:
        """`semaphore.acquire`, retrying Redis blips (module docstring)."""
        delay_s = self.backoff_s
        for retry in range(self.retries + 1):
            try:
                if self._load is None:
                    self.before_load()
                return (semaphore or self.semaphore).acquire(ticket, cancelled,
                                                             short=self.lookahead.waiting)
            except REDIS_BLIPS as exc:
                if retry >= self.retries:
                    raise AdmissionUnavailableError(
                        f"admission: Redis unreachable after {retry} retries ({exc}); "
                        f"{ticket.label} not admitted") from exc
                log.warning("admission: Redis unreachable (%s); retry %d/%d in %.1fs", exc,
                            retry + 1, self.retries, delay_s)
            if _wait_cancellable(delay_s, cancelled):
                raise JobCancelledError(f"{ticket.label} cancelled while waiting for Redis",
                                        None)
            delay_s *= 2
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Release the weights and any job leases still held; stop the heartbeats."""
        if self.instance is not None:
            self.instance.close()
        self.semaphore.close()
        self._load = None
