"""A running LM Studio prediction, consumed on the session's event loop (it uses the SDK).

`Prediction.begin()` submits one coroutine to the worker's SDK loop (`SdkLoop`): it creates
the stream (`respond_stream` / `complete_stream` of the `AsyncLLM`), starts it, and
consumes its events right there, on the loop. Fragments go to `Callbacks.on_fragment` on
the loop (it only buffers: no I/O on the loop) and tool-call events are collected (SDK
1.5's `respond()` ignores them); iterating the private `_iter_events()` is what the SDK's
own `act()` does, the only SDK internal used here.

The job waits in `wait(flush, flush_interval_s)` on the coroutine's future (a job greenlet
yields to the loop meanwhile, `workers.green`; a thread blocks): it wakes when the
prediction ended, and while it runs every `flush_interval_s` to publish what was
buffered. That is the point of issue 22: nothing per websocket message leaves the loop; a
long job wakes once more per flush interval. For a job someone streams (`first_at_once`)
the job also wakes at the first fragment, so the first text is published as it arrives
rather than up to `flush_interval_s` later.

`cancel()` may be called from any thread (the cancel watcher, a time limit): it asks the
loop to send `cancel` to the server, which answers with `success` (stop reason
`userStopped`) and the partial text. A cancel that comes before the stream started is sent
as soon as it has (a stream not started ignores cancel, lmstudio-protocol.md §5.3).
No message from LM Studio for `Session.timeout_s` ends the prediction with
LMStudioUnavailableError, as the sync SDK's timeout between messages did.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmstudio.json_api import PredictionFragmentEvent, PredictionToolCallEvent

from workers.contract import PredictionStats
from workers.green import wait_future
from workers.lmstudio.sdk_call import quiet_timeout, sdk_errors
from workers.lmstudio.session import Session

log = logging.getLogger(__name__)
_STAT_FIELDS = set(PredictionStats.model_fields)


@dataclass
class Outcome:
    """What a finished (or cancelled) prediction produced."""

    content: str
    parsed: Any
    stats: dict[str, Any]
    model_info: dict[str, Any]
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Callbacks:
    """What the loop calls while the prediction runs (all cheap: no I/O on the loop)."""

    on_prompt: Callable[[float], None]  # prompt processing progress 0..1
    on_first_token: Callable[[], None]
    on_fragment: Callable[[str, int], object]  # (text, tokens): buffer them


class Prediction:
    """One chat or completion prediction running on the session's loop."""

    def __init__(self, session: Session, kind: str, what: str) -> None:
        self._session = session
        self._kind = kind  # "chat" | "completion"
        self._what = what
        self._lock = threading.Lock()
        self._stream: Any = None  # the SDK's AsyncPredictionStream, once started (loop only)
        self._cancel_wanted = False  # (loop only)
        self._cancel_task: asyncio.Task[None] | None = None
        self._finished = False
        self._tool_calls: list[dict[str, Any]] = []
        self.cancel_sent = False
        self._future: Any = None
        # Done on the loop when the text begins (or the prediction ended without any).
        self._first_fragment: concurrent.futures.Future[None] = concurrent.futures.Future()

    @classmethod
    def begin(cls, session: Session, kind: str, payload: Any, config: dict[str, Any],
              callbacks: Callbacks) -> Prediction:
        """Submit the prediction to the loop (it starts there at once)."""
        what = "chat prediction" if kind == "chat" else "completion"
        prediction = cls(session, kind, what)
        prediction._future = session.loop.submit(
            prediction._run(session.handle, payload, config, callbacks))
        return prediction

    def wait(self, flush: Callable[[], None], flush_interval_s: float, *,
             first_at_once: bool = False) -> Outcome:
        """Wait (the job) until the prediction ends, calling `flush` every
        `flush_interval_s` meanwhile, and once at the first fragment if `first_at_once`
        (someone streams the text: one more write per job, for its first content).

        When it ended, the text still buffered is left to the caller: the job's end entry
        publishes it in the same round trip (a short job's whole text in one write).
        """
        if first_at_once:
            self._future.add_done_callback(lambda _done: self._text_began())
            wait_future(self._first_fragment, None)  # the first fragment, or the end
            if not self._future.done():
                flush()
        while not wait_future(self._future, flush_interval_s):
            flush()
        with sdk_errors(self._what):
            outcome: Outcome = self._future.result()
        return outcome

    def _text_began(self) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # already began
            self._first_fragment.set_result(None)

    def cancel(self) -> bool:
        """Ask the server to stop; True if a cancel was asked for (any thread, idempotent)."""
        with self._lock:
            if self._finished or self.cancel_sent:
                return False
            self.cancel_sent = True
        self._session.loop.call_soon(self._cancel_on_loop)
        return True

    # --- on the loop --------------------------------------------------------------------

    async def _run(self, handle: Any, payload: Any, config: dict[str, Any],
                   callbacks: Callbacks) -> Outcome:
        open_stream = handle.respond_stream if self._kind == "chat" else handle.complete_stream
        with sdk_errors(f"start {self._what}"):
            stream = await open_stream(
                payload, config=config, on_prompt_processing_progress=callbacks.on_prompt,
                on_first_token=callbacks.on_first_token)
        try:
            with sdk_errors(self._what):
                await stream.start()
                self._stream = stream
                if self._cancel_wanted:
                    await self._send_cancel()
                await self._consume(stream, callbacks.on_fragment)
                result = stream.result()
        finally:
            with self._lock:
                self._finished = True
            await stream.aclose()
        return Outcome(content=result.content, parsed=result.parsed if result.structured
                       else None, stats=stats_dict(result.stats),
                       model_info=result.model_info.to_dict(), tool_calls=self._tool_calls)

    async def _consume(self, stream: Any, on_fragment: Callable[[str, int], object]) -> None:
        async with quiet_timeout(self._session.timeout_s) as heard, \
                contextlib.aclosing(stream._iter_events()) as events:
            try:
                async for event in events:
                    heard()
                    if isinstance(event, PredictionFragmentEvent):
                        on_fragment(event.arg.content, int(event.arg.tokens_count))
                        if not self._first_fragment.done():
                            self._text_began()
                    elif isinstance(event, PredictionToolCallEvent):
                        self._tool_calls.append(_tool_call(event.arg, len(self._tool_calls)))
            except BaseException:
                with contextlib.suppress(Exception):  # the original error matters more
                    await stream.cancel()  # never leave the server generating for nobody
                raise

    def _cancel_on_loop(self) -> None:
        self._cancel_wanted = True
        if self._stream is not None and self._cancel_task is None:
            self._cancel_task = asyncio.get_running_loop().create_task(self._send_cancel())

    async def _send_cancel(self) -> None:
        try:
            await self._stream.cancel()  # a no-op once the stream finished
        except Exception as exc:  # noqa: BLE001 - like a watcher's failed cancel: say it
            log.warning("cancel of a %s failed: %s", self._what, exc)


def stats_dict(stats: Any) -> dict[str, Any]:
    """LlmPredictionStats as PredictionStats fields (snake_case, units in names)."""
    out: dict[str, Any] = {}
    for key, value in stats.to_dict().items():
        name = re.sub(r"_sec$", "_s", _snake(key))
        if name in _STAT_FIELDS and value is not None:
            out[name] = value
    return out


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _tool_call(request: Any, index: int) -> dict[str, Any]:
    """An SDK ToolCallRequest as an OpenAI-style ToolCall (arguments as a JSON string)."""
    return {
        "id": request.id or f"call_{index}",
        "type": "function",
        "function": {"name": request.name, "arguments": json.dumps(request.arguments or {})},
    }
