"""A running LM Studio prediction stream (part of the session boundary: it uses the SDK).

`Prediction.start()` creates the predict channel, so `cancel()` is meaningful from then on
(a stream that is not started yet ignores cancel, lmstudio-protocol.md §5.3). `cancel()` may
be called from another thread (the cancel watcher): it sends `cancel` to the server, which
answers with `success` (stop reason `userStopped`) and the partial text. `fragments()` yields
(text, tokens) pairs; tool-call events are collected on the way, because SDK 1.5's
`respond()` ignores them. Iterating the private `_iter_events()` is what the SDK's own
`act()` does; it is the only SDK internal used here.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lmstudio.json_api import PredictionFragmentEvent, PredictionToolCallEvent

from workers.contract import PredictionStats
from workers.lmstudio.session import Session, sdk_errors

_STAT_FIELDS = set(PredictionStats.model_fields)


@dataclass
class Outcome:
    """What a finished (or cancelled) prediction produced."""

    content: str
    parsed: Any
    stats: dict[str, Any]
    model_info: dict[str, Any]
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


class Prediction:
    """Wraps an SDK PredictionStream; use as a context manager around start/iterate."""

    def __init__(self, stream: Any, what: str) -> None:
        self._stream = stream
        self._what = what
        self._tool_calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._started = False
        self._finished = False
        self.cancel_sent = False

    def start(self) -> Prediction:
        with sdk_errors(self._what):
            self._stream.start()
        with self._lock:
            self._started = True
        return self

    def cancel(self) -> bool:
        """Ask the server to stop; True if a cancel was sent (thread-safe, idempotent)."""
        with self._lock:
            if not self._started or self._finished or self.cancel_sent:
                return False
            self.cancel_sent = True
        with sdk_errors(f"cancel {self._what}"):
            self._stream.cancel()
        return True

    def fragments(self) -> Iterator[tuple[str, int]]:
        with sdk_errors(self._what):
            for event in self._stream._iter_events():
                if isinstance(event, PredictionFragmentEvent):
                    yield event.arg.content, int(event.arg.tokens_count)
                elif isinstance(event, PredictionToolCallEvent):
                    self._tool_calls.append(_tool_call(event.arg, len(self._tool_calls)))
        with self._lock:
            self._finished = True

    def outcome(self) -> Outcome:
        with sdk_errors(self._what):
            result = self._stream.result()
        return Outcome(content=result.content, parsed=result.parsed if result.structured
                       else None, stats=stats_dict(result.stats),
                       model_info=result.model_info.to_dict(), tool_calls=self._tool_calls)

    def __enter__(self) -> Prediction:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None and not self._finished:
            with contextlib.suppress(Exception):  # the original error matters more
                self.cancel()  # never leave the server generating for nobody
        self._stream.close()


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


def chat_stream(session: Session, chat: Any, config: dict[str, Any], *,
                on_prompt: Callable[[float], None],
                on_first_token: Callable[[], None]) -> Prediction:
    """A not-yet-started chat prediction (`respond_stream`) on the pinned model."""
    with sdk_errors("start chat prediction"):
        stream = session.handle.respond_stream(
            chat, config=config, on_prompt_processing_progress=on_prompt,
            on_first_token=on_first_token)
    return Prediction(stream, "chat prediction")


def completion_stream(session: Session, prompt: str, config: dict[str, Any], *,
                      on_prompt: Callable[[float], None],
                      on_first_token: Callable[[], None]) -> Prediction:
    """A not-yet-started completion (`complete_stream`) on the pinned model."""
    with sdk_errors("start completion"):
        stream = session.handle.complete_stream(
            prompt, config=config, on_prompt_processing_progress=on_prompt,
            on_first_token=on_first_token)
    return Prediction(stream, "completion")
