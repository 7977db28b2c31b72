"""The four prediction callbacks, fired in the caller's process in the SDK's order.

The SDK's order for one prediction: `on_prompt_processing_progress` with 0.0 and then each
higher value (never backwards), 1.0 at the latest before the first fragment;
`on_first_token()` once, just before the first `on_prediction_fragment(fragment)`; then one
`on_prediction_fragment` per fragment; last, `on_message(AssistantResponse)` with the result.
After `cancel()`, progress and fragments that still arrive are dropped. A callback that
raises an `Exception` is logged and the prediction goes on (as in the SDK); a
`BaseException` (KeyboardInterrupt) ends it, and the job is cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmstudio as lms

log = logging.getLogger(__name__)


@dataclass
class Callbacks:
    on_message: Callable[[Any], Any] | None = None
    on_first_token: Callable[[], Any] | None = None
    on_prediction_fragment: Callable[[lms.LlmPredictionFragment], Any] | None = None
    on_prompt_processing_progress: Callable[[float], Any] | None = None
    progress_seen: float = field(default=-1.0, init=False)
    first_token_seen: bool = field(default=False, init=False)
    cancelled: bool = field(default=False, init=False)

    def reads_text(self) -> bool:
        """A callback takes the text as it comes (the job is then sent as streamed)."""
        return self.on_prediction_fragment is not None or self.on_first_token is not None

    def progress(self, value: float) -> None:
        if self.cancelled or value <= self.progress_seen:
            return
        previous, self.progress_seen = self.progress_seen, value
        if self.on_prompt_processing_progress is None:
            return
        if previous < 0 < value:
            _call(self.on_prompt_processing_progress, 0.0)
        _call(self.on_prompt_processing_progress, value)

    def fragment(self, fragment: lms.LlmPredictionFragment) -> None:
        """Before the caller sees `fragment`: progress to 1.0, first token, the fragment."""
        if self.progress_seen < 1.0:
            self.progress(1.0)
        if not self.first_token_seen:
            self.first_token_seen = True
            if self.on_first_token is not None:
                _call(self.on_first_token)
        if self.on_prediction_fragment is not None:
            _call(self.on_prediction_fragment, fragment)

    def message(self, result: lms.PredictionResult) -> None:
        if self.on_message is not None:
            _call(self.on_message, lms.Chat().add_assistant_response(result))


def _call(callback: Callable[..., Any], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("callback %r failed (the prediction goes on)", callback)
