"""Progress of a running job: the PROGRESS task state and the per-job fragment stream.

**Task state.** While a job runs, its Celery state is `PROGRESS` (`workers.contract`) with a
`JobProgress` dict as meta (phase, prompt-processing progress 0..1, time to first token,
tokens so far, embedding items done/total, worker). Updates are throttled to at most
`1 / STATE_INTERVAL_S` per second; a phase change is written at once. They are stored
without the job's arguments (cheap writes); the final state carries the extended fields.

**Fragment stream** (for producers that stream text as it is generated). Redis stream
`workers.keys.fragment_stream(job_id)` = `lmq:fragments:<job_id>`, written only by the
worker running the job. Entry fields (all strings):

* `{"t": text}`: the next piece of generated text. Fragments are batched: one entry holds
  what arrived in the last `FLUSH_INTERVAL_S` (or `FLUSH_CHARS`), written with one
  pipelined XADD + EXPIRE, so entries do not map 1:1 to tokens.
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
import time
from typing import Any

import redis

from workers import keys
from workers.contract import PROGRESS, JobProgress

log = logging.getLogger(__name__)

STATE_INTERVAL_S = 0.1  # at most 10 PROGRESS writes per second per job
FLUSH_INTERVAL_S = 0.05  # fragments wait at most this long before they are published
FLUSH_CHARS = 4096
STREAM_TTL_S = 3600


class FragmentStream:
    """Batched writer of one job's fragment stream."""

    def __init__(self, client: redis.Redis | None, job_id: str) -> None:
        self._client = client
        self._key = keys.fragment_stream(job_id)
        self._buffer: list[str] = []
        self._chars = 0
        self._last_flush = time.monotonic()
        self._broken = client is None

    def add(self, text: str) -> None:
        if not text:
            return
        self._buffer.append(text)
        self._chars += len(text)
        if self._chars >= FLUSH_CHARS or time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self, *extra: dict[str, str]) -> None:
        entries = [{"t": "".join(self._buffer)}] if self._buffer else []
        entries.extend(extra)
        self._buffer, self._chars = [], 0
        self._last_flush = time.monotonic()
        if entries:
            self._write(entries)

    def reset(self, attempt: int) -> None:
        self._buffer, self._chars = [], 0
        self._write([{"reset": str(attempt)}])

    def end(self, state: str) -> None:
        self.flush({"end": state})

    def _write(self, entries: list[dict[str, str]]) -> None:
        if self._broken:
            return
        assert self._client is not None
        try:
            pipe = self._client.pipeline(transaction=False)
            for entry in entries:
                pipe.xadd(self._key, entry)  # type: ignore[arg-type]
            pipe.expire(self._key, STREAM_TTL_S)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._broken = True
            log.warning("fragment stream %s disabled for this job: %s", self._key, exc)


class ProgressReporter:
    """Throttled PROGRESS state plus the fragment stream of one running job."""

    def __init__(self, task: Any, job_id: str, worker: str,
                 stream_client: redis.Redis | None, phase: str = "admission") -> None:
        self._task = task
        self._job_id = job_id
        self.stream = FragmentStream(stream_client, job_id)
        self.state = JobProgress(phase=phase, worker=worker)  # type: ignore[arg-type]
        self._started = time.monotonic()
        self._last_write = 0.0

    def phase(self, phase: str) -> None:
        if phase != self.state.phase:
            self.state.phase = phase  # type: ignore[assignment]
            self._publish(force=True)

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
        self.state.tokens_so_far += tokens
        self.stream.add(text)
        self._publish()

    def items(self, done: int, total: int) -> None:
        self.state.phase = "embedding"
        self.state.items_done, self.state.items_total = done, total
        self._publish(force=done == total)

    def restart(self, attempt: int) -> None:
        """The prediction restarts after a dropped connection."""
        self.state.tokens_so_far = 0
        self.state.time_to_first_token_s = None
        self.stream.reset(attempt)
        self.phase("prefill")

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < STATE_INTERVAL_S:
            return
        self._last_write = now
        try:
            self._task.backend.store_result(self._job_id, self.state.model_dump(), PROGRESS)
        except Exception as exc:  # noqa: BLE001 - progress must never fail a job
            log.warning("progress update of %s failed: %s", self._job_id, exc)
