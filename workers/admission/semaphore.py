"""A weighted semaphore in Redis, shared by every worker of one LM Studio host (a group).

Data model (prefix `lmq:admission:{group}`):

    :info    hash   ticket id -> {"k": "job"|"load", "m": model, "b": bytes, "s": slots}
    :queue   zset   waiting ticket ids, scored by arrival (a counter in :seq); a high-priority
                    job's minus 2^40: ahead of every normal and low one
    :held    zset   admitted ticket ids (leases), scored by admission time
    :exp     zset   every ticket id (waiting or held) -> expiry (ms, Redis clock)
    :bypass  hash   waiting ticket id -> times a later ticket was admitted past it
    :wake:ID list   the verdict for a waiter: "ok" or "no|need|room|budget|weights"
    :meta    hash   budget_bytes (last written by a worker; -1: host memory unknown), updated_ms

Capacity. A "load" ticket holds a model's weights; weights count once per model, however
many workers hold them. A "job" ticket holds KV bytes and one of its model's slots.
free = budget - weights of loaded models - KV bytes of admitted jobs. A budget of
`UNKNOWN_BUDGET` (the host's memory is unknown) admits by slots alone; free is then -1.

Leases. Each ticket expires `ttl_s` after its last renewal; a heartbeat thread renews this
process's tickets every ttl_s / 3. A worker killed with SIGKILL stops renewing, and every
script first purges expired tickets, so its capacity returns within ttl_s. Waiters also wake
when the earliest lease is due to expire and purge it themselves: nothing waits for a new
arrival to notice a dead worker.

Admission rule (run by every script, in queue order: high-priority jobs first, then
arrival; the broker has already handed jobs out by priority, but a worker holds several,
and those waiting here must not keep a later high job behind them):

1. A job whose KV can never fit (more than budget - loaded weights) is rejected at once
   with the numbers (DoesNotFitError).
2. A ticket is admitted when its bytes fit in `free`, its model has a free slot (jobs),
   and no earlier ticket is being *held back for*.
3. So a small job may overtake a large head-of-line job that does not fit. Each time a
   ticket is admitted past an earlier ticket that waits for memory, that earlier ticket's
   bypass count goes up. Once any waiting ticket has been passed `max_bypass` times,
   nothing behind it is admitted until it is: running jobs drain, and since it fits in an
   empty budget (rule 1), it is admitted once they have. Starvation of a large job is thus
   bounded by `max_bypass` overtakes plus the jobs running at that moment.
   (A load waiting for other models to unload does not hold anyone back.)

Waiting does not spin: a waiter blocks in BLPOP on its own wake list, which whoever frees
capacity pushes to. It wakes on its own only to check `cancelled()` (every
`cancel_check_s`) and when the earliest lease is due to expire.

Rule 3 works only on the tickets that have reached this queue. A worker holds a few jobs
(its threads); when all of them wait for memory, the small jobs behind them in the broker
never get here. `acquire(short=...)` is how a worker takes more (`lookahead`): the context
it is given is held while the ticket waits having found too little free memory.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import redis

from workers import green, keys, redis_pool
from workers.admission import lua
from workers.error import AdmissionClosedError, DoesNotFitError, JobCancelledError

log = logging.getLogger(__name__)

MAX_BYPASS = 8
CANCEL_CHECK_S = 0.5
MIN_WAKE_S = 0.05
UNKNOWN_BUDGET = -1  # the host's memory is unknown: no byte limit, slots only


@dataclass(frozen=True)
class Ticket:
    """A request for capacity: a job's KV bytes and slot, or a model's weights."""

    kind: str  # "job" or "load"
    model: str
    nbytes: int
    slots: int = 0
    label: str = ""  # for messages: "job 42 (1,200 tokens x 32,768 B)"
    id: str = ""
    high: bool = False  # a high-priority job: queued ahead of normal and low ones

    def with_id(self) -> Ticket:
        ident = f"{self.kind}:{self.model}:{uuid.uuid4().hex}"
        return replace(self, id=ident)

    def info_json(self) -> str:
        return json.dumps({"k": self.kind, "m": self.model, "b": self.nbytes, "s": self.slots})


@dataclass(frozen=True)
class Verdict:
    """What a script says about one ticket."""

    message: str  # "ok", "wait", "lost" or "no|need|room|budget|weights"
    next_expiry_s: float | None
    free_bytes: int

    @classmethod
    def parse(cls, reply: list[Any]) -> Verdict:
        message = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        expiry_ms = int(reply[1])
        return cls(message, None if expiry_ms < 0 else expiry_ms / 1000, int(reply[2]))


class GroupSemaphore:
    """One process's handle on a group's semaphore; thread-safe."""

    def __init__(
        self,
        client: redis.Redis,
        group: str,
        budget_bytes: int,
        ttl_s: float,
        *,
        max_bypass: int = MAX_BYPASS,
        cancel_check_s: float = CANCEL_CHECK_S,
    ):
        self.client = client
        self.group = group
        self.prefix = keys.admission(group)
        self.budget_bytes = budget_bytes
        self.ttl_s = ttl_s
        self.max_bypass = max_bypass
        self.cancel_check_s = cancel_check_s
        self._scripts = {
            name: client.register_script(getattr(lua, name))
            for name in ("ACQUIRE", "POLL", "RELEASE", "RENEW")
        }
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self._heartbeat: Heartbeat | None = None
        self._closed = False
        self.last_free_bytes: int | None = None  # group's free bytes at the latest verdict
        # Called by the heartbeat every ttl_s / 3 (e.g. to keep an instance's shape alive).
        self.beat_hooks: list[Callable[[], None]] = []

    # --- scripts ---------------------------------------------------------------------
    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    def _run(self, name: str, *args: str | int) -> Any:
        return self._scripts[name](keys=[self.prefix], args=list(args))

    def _enqueue(self, ticket: Ticket) -> Verdict:
        self.start_heartbeat()
        with self._lock:
            self._live.add(ticket.id)
        reply = self._run(
            "ACQUIRE",
            ticket.id,
            ticket.info_json(),
            self.budget_bytes,
            self._ttl_ms,
            self.max_bypass,
            "1" if ticket.high else "0",
        )
        return self._noted(Verdict.parse(reply))

    def _poll(self, ticket_id: str) -> Verdict:
        reply = self._run("POLL", ticket_id, self.budget_bytes, self._ttl_ms, self.max_bypass)
        return self._noted(Verdict.parse(reply))

    @property
    def budget_known(self) -> bool:
        return self.budget_bytes >= 0

    def _noted(self, verdict: Verdict) -> Verdict:
        self.last_free_bytes = verdict.free_bytes if self.budget_known else None
        return verdict

    def release(self, *ticket_ids: str) -> None:
        """Give back held tickets, or withdraw waiting ones."""
        with self._lock:
            self._live.difference_update(ticket_ids)
        self._run("RELEASE", self.budget_bytes, self._ttl_ms, self.max_bypass, *ticket_ids)

    def renew(self) -> list[str]:
        """Extend this process's tickets; returns the ids that had already expired."""
        with self._lock:
            live = sorted(self._live)
        if not live:
            return []
        missing = self._run("RENEW", self.budget_bytes, self._ttl_ms, self.max_bypass, *live)
        lost = [m.decode() if isinstance(m, bytes) else str(m) for m in missing]
        if lost:
            log.warning("admission leases expired before renewal (worker paused?): %s", lost)
        return lost

    # --- acquiring -------------------------------------------------------------------
    def acquire(
        self, ticket: Ticket, cancelled: Callable[[], bool] = lambda: False, *, wait: bool = True,
        short: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> Ticket:
        """Hold `ticket` (returned with its id) once admitted; block until then.

        Raises DoesNotFitError when it can never fit (or, with wait=False, does not fit
        now), JobCancelledError when `cancelled()` turns true while waiting. `short()` is
        entered while the ticket waits having found less free than it needs (not when it
        waits for a slot only, nor when the budget is unknown).
        """
        ticket = ticket.with_id()
        verdict = self._enqueue(ticket)
        if verdict.message == "wait" and not wait:
            self.release(ticket.id)
            raise DoesNotFitError(self._busy_message(ticket, verdict))
        is_short = (short is not None and verdict.message == "wait" and self.budget_known
                    and ticket.nbytes > verdict.free_bytes)
        try:
            with short() if is_short and short is not None else nullcontext():
                while verdict.message in ("wait", "lost"):
                    if verdict.message == "lost":  # expired while waiting: queue again
                        ticket, verdict = self._requeue(ticket)
                    else:
                        verdict = self._wait_once(ticket, verdict, cancelled)
        except BaseException:
            self.release(ticket.id)
            raise
        if verdict.message == "ok":
            return ticket
        self.release(ticket.id)
        raise DoesNotFitError(self._verdict_message(ticket, verdict))

    def _requeue(self, ticket: Ticket) -> tuple[Ticket, Verdict]:
        """A waiting ticket expired (Redis or this process stalled past the TTL, or close())."""
        if self._closed:
            raise AdmissionClosedError(
                f"{ticket.label or ticket.id}: the worker is shutting "
                "down; the job will run again elsewhere"
            )
        log.warning("admission ticket %s expired while waiting; queueing again", ticket.id)
        ticket = ticket.with_id()
        return ticket, self._enqueue(ticket)

    def _wait_once(
        self, ticket: Ticket, verdict: Verdict, cancelled: Callable[[], bool]
    ) -> Verdict:
        """Block until a verdict, a cancel check, or the earliest lease's expiry."""
        due_s = verdict.next_expiry_s if verdict.next_expiry_s is not None else self.ttl_s
        deadline = time.monotonic() + max(MIN_WAKE_S, due_s)
        wake = f"{self.prefix}:wake:{ticket.id}"
        while True:
            if cancelled():
                raise JobCancelledError(
                    f"{ticket.label or ticket.id} cancelled while waiting for GPU memory", None
                )
            timeout_s = min(self.cancel_check_s, max(MIN_WAKE_S, deadline - time.monotonic()))
            item = (self.client.blpop([wake], timeout=timeout_s)
                    if redis_pool.reads_yield(self.client)  # waits on the loop
                    else green.blocking(self.client.blpop, [wake], timeout_s))
            if item is not None:
                message = item[1].decode() if isinstance(item[1], bytes) else str(item[1])
                return Verdict(message, verdict.next_expiry_s, verdict.free_bytes)
            if time.monotonic() >= deadline:
                return self._poll(ticket.id)

    def _verdict_message(self, ticket: Ticket, verdict: Verdict) -> str:
        _, need, room, budget, weights = verdict.message.split("|")
        return (
            f"{ticket.label or ticket.id} needs {int(need):,} bytes of KV cache, but "
            f"GPU group {self.group!r} has at most {int(room):,} bytes for KV cache "
            f"(budget {int(budget):,} - loaded weights {int(weights):,}); shorten "
            "the prompt or max_tokens, or raise LMQ_GPU_MEMORY"
        )

    def _busy_message(self, ticket: Ticket, verdict: Verdict) -> str:
        return (
            f"{ticket.label or ticket.id} needs {ticket.nbytes:,} bytes of GPU memory, "
            f"but GPU group {self.group!r} has {max(verdict.free_bytes, 0):,} free "
            f"of a budget of {self.budget_bytes:,} bytes"
        )

    # --- lifetime --------------------------------------------------------------------
    def start_heartbeat(self) -> None:
        with self._lock:
            if self._heartbeat is not None:
                return
            self._heartbeat = Heartbeat(self)
        self._heartbeat.start()

    def close(self) -> None:
        """Stop renewing and give back everything this process holds or waits for."""
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        with self._lock:
            live = sorted(self._live)
        if live:
            self.release(*live)
            with self.client.pipeline(transaction=False) as pipe:
                for ticket_id in live:  # wake this process's waiters: they raise at once
                    pipe.rpush(f"{self.prefix}:wake:{ticket_id}", "lost")
                    pipe.pexpire(f"{self.prefix}:wake:{ticket_id}", self._ttl_ms)
                pipe.execute()


class Heartbeat(threading.Thread):
    """Renews a semaphore's tickets every ttl_s / 3 until stopped."""

    def __init__(self, semaphore: GroupSemaphore) -> None:
        super().__init__(name=f"lmq-admission-heartbeat-{semaphore.group}", daemon=True)
        self.semaphore = semaphore
        self._stopped = threading.Event()

    def run(self) -> None:
        interval_s = self.semaphore.ttl_s / 3
        while not self._stopped.wait(interval_s):
            try:
                self.semaphore.renew()
                for hook in self.semaphore.beat_hooks:
                    hook()
            except redis.RedisError as exc:  # keep beating: Redis may come back
                log.warning("admission heartbeat failed: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
