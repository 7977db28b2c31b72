"""The writes that end a job ride in the round trip that stores its final state.

A finished job used to make three round trips from its thread, one after another: the end
entry of its fragment stream (`workers.jobs.progress`), its final state (the result
backend's `STORE_SCRIPT`) and its outcome in the metrics (`workers.metrics.FINISH_SCRIPT`).
Now the job registers the first and the last here as *riders*, and the result backend
sends them in the pipeline that stores the final state, after it: one round trip. A
stream reader that sees the end entry finds the result already stored. The broker's ack
of a job that succeeded rides the same way (`workers.delivery.finish_ack`). Not the
release of its admission slot: held until the result is stored, the slot idled about 2%
of the time at the LM Studio-like timing (ops/profile-worker-stress.md, 2026-12-06).

Riding needs our keys in the result backend's Redis (LMQ_REDIS_URL unset or equal);
otherwise, and for a job that stores no final state here (requeued, or ended before it
ran), `task_postrun` sends what is left on its own: a stream end in its own round trip, and
the metrics as `workers.metrics.on_postrun` always did. Riders are kept per thread and job
id: Celery stores a task's final state in the thread (and greenlet) that ran it, right
after it returned or raised.

A rider's write never fails the job: an error is logged, as the writes it replaces did. If
the pipeline itself fails (Redis lost mid-write), Celery retries storing the state alone;
the riders are not sent twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import redis
from celery import signals
from redis.exceptions import NoScriptError

from workers.contract import TASK_NAMES
from workers.delivery import result_store

log = logging.getLogger(__name__)

_local = threading.local()
# Set by `connect`: (job id, task, args) -> a rider each job gets when it starts, or None.
_rider_makers: list[Callable[[str, Any, Any], Rider | None]] = []
# Scripts this process loaded into Redis: a script's first EVALSHA in a pipeline would
# fail NOSCRIPT, and its resend would land after the writes queued behind it.
_loaded: set[str] = set()


class FinishBatch:
    """A pipeline of the writes that end a job; scripts go by SHA (loaded first, once), and
    are resent whole on NOSCRIPT (a Redis restarted or flushed since)."""

    def __init__(self, client: redis.Redis) -> None:
        self.pipe = client.pipeline(transaction=False)
        self._scripts: list[tuple[int, Any, list[Any], list[Any]]] = []
        self.done: list[Callable[[], None]] = []

    def after(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the batch went through (not if it was lost)."""
        self.done.append(callback)

    def script(self, script: Any, keys: list[Any], args: list[Any]) -> None:
        if script.sha not in _loaded:
            script.registered_client.script_load(script.script)
            _loaded.add(script.sha)
        self._scripts.append((len(self.pipe), script, keys, args))
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)

    def execute(self) -> list[Any]:
        replies: list[Any] = self.pipe.execute(raise_on_error=False)
        for index, script, keys, args in self._scripts:
            if isinstance(replies[index], NoScriptError):
                replies[index] = script(keys=keys, args=args)  # loads it, then runs it
        return replies


class Rider(Protocol):
    def add(self, batch: FinishBatch, state: str, result: Any) -> None:
        """Queue this write, for a job whose final state `state` is stored with `result`."""

    def send_alone(self, state: str | None) -> None:
        """Write it in a round trip of its own (nothing stored it with the final state)."""


def ride(job_id: str, rider: Rider) -> None:
    """Send `rider` with the job's final state (this thread stores it)."""
    riders: dict[str, list[Rider]] = _local.__dict__.setdefault("riders", {})
    riders.setdefault(job_id, []).append(rider)


def take(job_id: str) -> list[Rider]:
    """The riders of `job_id` still to send, now in the caller's hands."""
    riders: dict[str, list[Rider]] = _local.__dict__.get("riders", {})
    return riders.pop(job_id, [])


def send(client: redis.Redis, store: Any, riders: list[Rider], state: str,
         result: Any) -> Any:
    """Run `store` (script, keys, args: the final state's write) with the riders after it,
    in one round trip; the store script's reply. A rider's error is logged, not raised."""
    batch = FinishBatch(client)
    batch.script(*store)
    for rider in riders:
        rider.add(batch, state, result)
    try:
        replies = batch.execute()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("%d write(s) that end a job lost with the connection: %s", len(riders), exc)
        raise  # the backend stores the state again, alone
    for callback in batch.done:
        callback()
    if isinstance(replies[0], Exception):
        raise replies[0]
    failed = [reply for reply in replies[1:] if isinstance(reply, Exception)]
    if failed:
        log.warning("%d write(s) that end a job failed: %s", len(failed), failed[0])
    return replies[0]


class StreamEnd:
    """The fragment stream's last text and its end entry (`FragmentStream.end`)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def add(self, batch: FinishBatch, state: str, result: Any) -> None:
        self.stream.end_into(batch.pipe, state)

    def send_alone(self, state: str | None) -> None:
        self.stream.end(state or "SUCCESS")


def _on_prerun(task_id: str | None = None, task: Any = None, args: Any = None,
               **_: Any) -> None:
    if task is None or task_id is None or task.name not in TASK_NAMES:
        return
    if result_store.shares_result_redis():
        for make in _rider_makers:
            rider = make(task_id, task, args)
            if rider is not None:
                ride(task_id, rider)


def _on_postrun(task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    for rider in take(task_id or ""):
        try:
            rider.send_alone(state)
        except Exception as exc:  # noqa: BLE001 - an ending write never fails a job
            log.warning("a write ending job %s failed: %s", task_id, exc)


def connect(*rider_makers: Callable[[str, Any, Any], Rider | None]) -> None:
    """Give each lmq job the riders `rider_makers` make when it starts (task_prerun; the
    metrics' outcome, `workers.metrics.finish_rider`), and send what no final state took
    (task_postrun). Idempotent."""
    _rider_makers[:] = rider_makers
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="lmq-finish-riders")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="lmq-finish-leftovers")
