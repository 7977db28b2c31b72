"""Progress of a running job: the PROGRESS task state and the per-job fragment stream.

**Task state.** While a job runs, its Celery state is `PROGRESS` (`workers.contract`) with a
`JobProgress` dict as meta (phase, prompt-processing progress 0..1, time to first token,
tokens so far, embedding items done/total, worker). Job threads never wait on these writes:
they only mark their state changed, and one writer thread per worker process (`StateWriter`)
writes the latest state of every running job whose state changed, every `STATE_INTERVAL_S`,
all in one pipelined round trip (SETEX + PUBLISH per job, the same meta and channel as
Celery's `store_result`). A job's first PROGRESS is written once it has run for
`STATE_INTERVAL_S`, so a short job writes none (its states are STARTED, then the final one);
a long job's state is at most `STATE_INTERVAL_S` old. They are stored without the job's
arguments (cheap writes); the final state carries the extended fields. `close()` (called
before the job's final state is stored) waits for an in-flight write, so a PROGRESS write
never lands after the final state.

**Fragment stream** (for producers that stream text as it is generated). Redis stream
`workers.keys.fragment_stream(job_id)` = `lmq:fragments:<job_id>`, written only by the
worker running the job. Entry fields (all strings):

* `{"t": text}`: the next piece of generated text. Fragments are batched: one entry holds
  what arrived since the last flush, written with one pipelined XADD + EXPIRE, so entries
  do not map 1:1 to tokens. A short job writes its whole text and the end entry in one
  round trip. Predictions buffer fragments on the SDK's event loop (`buffer()`, no I/O
  there) and the job, waking every `flush_interval_s(streamed)` while the prediction
  runs, writes them (`flush()`): only the job ever writes, so entries keep their order.
  A job whose producer streams it (`STREAMED_HEADER`) is flushed every
  `FLUSH_INTERVAL_S`, and at its first fragment: the text is published as it is
  generated. Any other job (a batch job: nobody said they would read it as it comes) is
  flushed every `UNSTREAMED_FLUSH_INTERVAL_S`: a late `stream()` still gets all of it,
  in pieces up to that old, and a long batch job makes one write a second, not twenty.
* `{"reset": attempt}`: the connection to LM Studio dropped and the prediction restarts
  from scratch; discard the text read so far.
* `{"end": state}`: the last entry; state is `SUCCESS`, `REVOKED` or `FAILURE`. Read the
  full result (and partial result of a cancelled job) from the result backend.

Read with `XREAD BLOCK ... STREAMS lmq:fragments:<id> <last-id>` from `0-0`. The stream
expires `STREAM_TTL_S` after its last write. Publishing never fails a job: Redis errors are
logged once per job and the job goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from workers import keys
from workers.contract import PROGRESS, JobProgress

log = logging.getLogger(__name__)

STATE_INTERVAL_S = 0.1  # at most 10 PROGRESS writes per second per job
FLUSH_INTERVAL_S = 0.05  # a streamed job's fragments wait at most this long to be published
UNSTREAMED_FLUSH_INTERVAL_S = 1.0  # and those of a job nobody said they would stream
STREAM_TTL_S = 3600


def flush_interval_s(streamed: bool) -> float:
    """How often a running job publishes its buffered text."""
    return FLUSH_INTERVAL_S if streamed else UNSTREAMED_FLUSH_INTERVAL_S


class FragmentStream:
    """Batched writer of one job's fragment stream."""

    def __init__(self, client: redis.Redis | None, job_id: str) -> None:
        self._client = client
        self._key = keys.fragment_stream(job_id)
        self._buffer: list[str] = []
        self._broken = client is None
        self._lock = threading.Lock()  # the buffer: the SDK loop adds, the job thread takes

    def buffer(self, text: str) -> None:
        """Buffer `text` without writing (any thread: no I/O); `flush()` writes it."""
        if not text:
            return
        with self._lock:
            self._buffer.append(text)

    def flush(self, *extra: dict[str, str]) -> None:
        entries = self._take_buffer()
        entries.extend(extra)
        if entries:
            self._write(entries)

    def reset(self, attempt: int) -> None:
        with self._lock:
            self._buffer = []
        self._write([{"reset": str(attempt)}])

    def end(self, state: str) -> None:
        self.flush({"end": state})

    def end_into(self, pipe: Any, state: str) -> None:
        """Queue what `end(state)` writes on `pipe`, another client's pipeline to the same
        Redis (the job's final state goes with it: `workers.delivery.job_finish`)."""
        if not self._broken:
            self._queue(pipe, self._take_buffer() + [{"end": state}])

    def _take_buffer(self) -> list[dict[str, str]]:
        with self._lock:
            entries = [{"t": "".join(self._buffer)}] if self._buffer else []
            self._buffer = []
        return entries

    def _queue(self, pipe: Any, entries: list[dict[str, str]]) -> None:
        for entry in entries:
            pipe.xadd(self._key, entry)
        pipe.expire(self._key, STREAM_TTL_S)

    def _write(self, entries: list[dict[str, str]]) -> None:
        if self._broken:
            return
        assert self._client is not None
        try:
            pipe = self._client.pipeline(transaction=False)
            self._queue(pipe, entries)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._broken = True
            log.warning("fragment stream %s disabled for this job: %s", self._key, exc)


class ProgressReporter:
    """Throttled PROGRESS state plus the fragment stream of one running job."""

    def __init__(self, task: Any, job_id: str, worker: str,
                 stream_client: redis.Redis | None, phase: str = "admission") -> None:
        self.backend = task.backend
        self.job_id = job_id
        self.stream = FragmentStream(stream_client, job_id)
        self.state = JobProgress(phase=phase, worker=worker)  # type: ignore[arg-type]
        self._started = time.monotonic()
        self.dirty = False
        self.closed = False

    def phase(self, phase: str) -> None:
        if phase != self.state.phase:
            self.state.phase = phase  # type: ignore[assignment]
            self._publish()

    def prompt(self, progress: float) -> None:
        self.state.prompt_progress = float(progress)
        if self.state.phase != "prefill":
            self.phase("prefill")
        else:
            self._publish()

    def first_token(self) -> None:
        self.state.time_to_first_token_s = round(time.monotonic() - self._started, 4)
        self.state.prompt_progress = 1.0
        self.phase("generating")

    def fragment(self, text: str, tokens: int) -> None:
        """A fragment, buffered only (called on the SDK loop: no I/O); the job thread
        publishes the buffer with `stream.flush()`."""
        self.state.tokens_so_far += tokens
        self.stream.buffer(text)
        self._publish()

    def items(self, done: int, total: int) -> None:
        self.state.phase = "embedding"
        self.state.items_done, self.state.items_total = done, total
        self._publish()

    def restart(self, attempt: int) -> None:
        """The prediction restarts after a dropped connection."""
        self.state.tokens_so_far = 0
        self.state.time_to_first_token_s = None
        self.stream.reset(attempt)
        self.phase("prefill")

    def due(self, now: float) -> bool:
        return self.dirty and now - self._started >= STATE_INTERVAL_S

    def close(self) -> None:
        """No PROGRESS write after this returns (call before storing the final state)."""
        state_writer().forget(self)

    def _publish(self) -> None:
        if not self.dirty and not self.closed:
            self.dirty = True
            state_writer().track(self)


class StateWriter:
    """One thread per process writing the PROGRESS states of running jobs, batched."""

    def __init__(self, interval_s: float = STATE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._reporters: dict[int, ProgressReporter] = {}
        self._lock = threading.Lock()  # guards _reporters (jobs never wait on Redis here)
        self._write_lock = threading.Lock()  # held while writing: forget() waits for it
        self._thread = threading.Thread(target=self._run, name="lmq-progress-writer",
                                        daemon=True)
        self._thread.start()

    def track(self, reporter: ProgressReporter) -> None:
        with self._lock:
            if not reporter.closed:
                self._reporters[id(reporter)] = reporter

    def forget(self, reporter: ProgressReporter) -> None:
        with self._write_lock, self._lock:
            reporter.closed = True
            self._reporters.pop(id(reporter), None)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.write_due()
            except Exception:  # noqa: BLE001 - keep writing whatever happens
                log.exception("progress writer failed")

    def write_due(self) -> None:
        now = time.monotonic()
        with self._write_lock:
            with self._lock:
                due = [r for r in self._reporters.values() if r.due(now)]
                for reporter in due:
                    reporter.dirty = False
                    del self._reporters[id(reporter)]
            if due:
                _write_states(due)


def _write_states(reporters: list[ProgressReporter]) -> None:
    by_backend: dict[int, list[ProgressReporter]] = {}
    for reporter in reporters:
        by_backend.setdefault(id(reporter.backend), []).append(reporter)
    for group in by_backend.values():
        backend = group[0].backend
        try:
            if hasattr(backend, "client") and hasattr(backend, "get_key_for_task"):
                _pipeline_states(backend, group)
            else:
                for reporter in group:
                    backend.store_result(reporter.job_id, reporter.state.model_dump(),
                                         PROGRESS)
        except Exception as exc:  # noqa: BLE001 - progress must never fail a job
            log.warning("progress update of %d jobs failed: %s", len(group), exc)


def _pipeline_states(backend: Any, reporters: list[ProgressReporter]) -> None:
    """What `backend.store_result(id, meta, PROGRESS)` writes, for many jobs at once."""
    expires_s = int(backend.expires or 0)
    with backend.client.pipeline(transaction=False) as pipe:
        for reporter in reporters:
            meta = backend._get_result_meta(result=reporter.state.model_dump(),
                                            state=PROGRESS, traceback=None, request=None)
            meta["task_id"] = reporter.job_id
            key, value = backend.get_key_for_task(reporter.job_id), backend.encode(meta)
            if expires_s:
                pipe.setex(key, expires_s, value)
            else:
                pipe.set(key, value)
            pipe.publish(key, value)
        pipe.execute()


_writer: StateWriter | None = None
_writer_lock = threading.Lock()


def state_writer() -> StateWriter:
    """The process's PROGRESS writer (started on first use)."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = StateWriter()
        return _writer
