"""`PredictionStream`: one pool job seen as the SDK's prediction stream.

Like the SDK's stream, it sends its request on `start()` (or on the first iteration, or on
entering `with`), yields `LlmPredictionFragment`s, and then holds a `PredictionResult`
(`result()`, `stats`, `model_info`). `cancel()` revokes the job: the worker cancels the
prediction and the result is the partial one with stop reason `userStopped`. Leaving the
iteration early (break, an error, KeyboardInterrupt) cancels the job too: nobody would read
what the GPU still generates.

The fragments come from the job's Redis stream; while it is silent (the job queued, or
processing the prompt) the job's PROGRESS state is read every half second for the
prompt-processing progress.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import lmstudio as lms
from celery import states

from producers import fragment_reader
from producers.job_handle import JobHandle
from producers.job_queue import JobQueue
from producers.sdk import _result
from producers.sdk._callbacks import Callbacks
from producers.sdk._errors import translated
from workers.contract import PROGRESS, ChatResult, ToolCall
from workers.error import JobCancelledError

log = logging.getLogger(__name__)

RESULT_AFTER_STREAM_S = 60.0  # the stream has ended: the result is being stored


def final_result(model_key: str, config: lms.LlmPredictionConfig, found: Any
                 ) -> tuple[lms.PredictionResult, list[ToolCall]]:
    """The SDK result (and the tool calls) of a finished job, or of a cancelled one."""
    if isinstance(found, JobCancelledError):
        return _result.cancelled_result(model_key, found.partial, config), []
    calls = list(found.tool_calls) if isinstance(found, ChatResult) else []
    return _result.prediction_result(found, config), calls


def progress_of(meta: dict[str, Any]) -> float | None:
    """The prompt-processing progress in a job's stored state, if it is running."""
    progress = meta.get("result")
    if meta.get("status") == PROGRESS and isinstance(progress, dict):
        return float(progress.get("prompt_progress") or 0.0)
    return None


class StreamOutcome:
    """What the sync and async streams share: the job once sent, and how it ended."""

    def __init__(self) -> None:
        self._handle: JobHandle | None = None
        self._final: lms.PredictionResult | None = None
        self._error: BaseException | None = None
        self.tool_calls: list[ToolCall] = []

    def result(self) -> lms.PredictionResult:
        if self._handle is None:
            raise lms.LMStudioRuntimeError("Prediction processing has not been initiated.")
        if self._error is not None:
            raise self._error
        if self._final is None:
            raise lms.LMStudioRuntimeError("Prediction processing has not yet been completed.")
        return self._final

    @property
    def stats(self) -> lms.LlmPredictionStats | None:
        return None if self._final is None else self._final.stats

    @property
    def model_info(self) -> lms.LlmInfo | None:
        return None if self._final is None else self._final.model_info

    @property
    def job_id(self) -> str | None:
        """The pool's job id (None until the request is sent)."""
        return None if self._handle is None else self._handle.id


class PredictionStream(StreamOutcome):
    """A chat or completion job, iterated as the SDK's fragments."""

    def __init__(self, queue: JobQueue, model_key: str, submit: Callable[[bool], JobHandle],
                 config: lms.LlmPredictionConfig, callbacks: Callbacks) -> None:
        """`submit(streamed)` sends the job (`JobQueue.chat`'s `streamed`)."""
        self._queue = queue
        self._model_key = model_key
        self._submit = submit
        self._config = config
        self._callbacks = callbacks
        super().__init__()

    # --- the SDK's stream API --------------------------------------------------------

    def start(self) -> None:
        """Send the job, as one whose text is read as it comes."""
        self._send(streamed=True)

    def _send(self, streamed: bool) -> None:
        if self._handle is not None:
            raise lms.LMStudioRuntimeError("Prediction request has already been sent.")
        with translated():
            self._handle = self._submit(streamed)

    def __iter__(self) -> Iterator[lms.LlmPredictionFragment]:
        if self._error is not None:
            raise self._error
        if self._final is not None:
            return
        if self._handle is None:
            self.start()
        try:
            yield from self._fragments()
            self._finish()
        except BaseException as exc:
            if self._final is None:
                self._abandon(exc)
            raise

    def wait_for_result(self) -> lms.PredictionResult:
        if self._handle is None and self._error is None and self._final is None:
            self._send(streamed=self._callbacks.reads_text())  # nothing iterates the text
        for _ in self:
            pass
        return self.result()

    def cancel(self) -> None:
        """Revoke the job; the result becomes the partial one (stop reason userStopped)."""
        if self._handle is None or self._final is not None or self._callbacks.cancelled:
            return
        self._callbacks.cancelled = True
        with translated():
            self._handle.cancel()

    def close(self) -> None:
        """Cancel the job if it is still running."""
        if self._handle is not None and self._final is None and self._error is None:
            self._abandon(lms.LMStudioCancelledError(
                "Prediction cancelled unexpectedly: please use .cancel()"))

    def __enter__(self) -> PredictionStream:
        if self._handle is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading the job -------------------------------------------------------------

    def _fragments(self) -> Iterator[lms.LlmPredictionFragment]:
        assert self._handle is not None
        texts = fragment_reader.read_fragments(self._queue.store_client, self._handle.id,
                                               self._job_finished, None, self._restarted)
        with translated():
            for text in texts:
                if self._callbacks.cancelled:
                    continue  # as the SDK: what arrives after cancel() is dropped
                fragment = _result.fragment(text)
                self._callbacks.fragment(fragment)
                yield fragment

    def _job_finished(self) -> bool:
        """Asked while the stream is silent: report prompt progress, say if it ended."""
        assert self._handle is not None
        meta = self._queue.job_meta(self._handle.id)
        progress = progress_of(meta)
        if progress is not None and not self._callbacks.first_token_seen:
            self._callbacks.progress(progress)
        return meta.get("status") in states.READY_STATES

    def _restarted(self) -> None:
        # The SDK has no way to take fragments back; the result's content is the final text.
        log.warning("job %s: LM Studio dropped the connection and the prediction restarted; "
                    "fragments seen so far are void, result() has the final text", self.job_id)

    def _finish(self) -> None:
        assert self._handle is not None
        with translated():
            try:
                found: Any = self._handle.result(timeout=RESULT_AFTER_STREAM_S)
            except JobCancelledError as exc:
                found = exc
        self._final, self.tool_calls = final_result(self._model_key, self._config, found)
        self._callbacks.message(self._final)

    def _abandon(self, exc: BaseException) -> None:
        self._error = exc
        if self._handle is not None and not self._callbacks.cancelled:
            self._callbacks.cancelled = True
            try:
                self._handle.cancel()
            except Exception:  # noqa: BLE001 - the original error matters more
                log.warning("could not cancel job %s", self._handle.id, exc_info=True)
