"""The direct provider's line to LM Studio: one sync `lms.Client`, predictions in threads.

Why the sync client in threads rather than `AsyncClient`: the sync client runs its own
event-loop thread, so one client serves agents on any (and successive) asyncio loops; the
async client is bound to the loop that opened it, opens all five namespace sockets, and has
no timeouts. A caller's event loop only awaits a future; cancelling or timing out that await
sends LM Studio a real cancel (`PredictionStream.cancel()`, safe from another thread).

Errors are mapped here, at one boundary, to the project's error tree.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import lmstudio as lms
from lmstudio.json_api import PredictionFragmentEvent, PredictionToolCallEvent

from producers.openmanus._messages import Reply, openai_tool_call
from workers.contract import PredictionStats
from workers.error import (
    ContextOverflowError,
    JobFailedError,
    JobTimeoutError,
    LMStudioUnavailableError,
    ModelNotAvailableError,
)

_OVERFLOW_MARKERS = ("context length", "n_ctx", "context window", "contextlength")
_DRAIN_S = 10.0  # how long a cancelled call waits for LM Studio to confirm the cancel
FragmentCallback = Callable[[str], Any]


class _Prediction:
    """A stream that can be cancelled from any thread, even before it has started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: Any = None
        self.cancelled = False

    def start(self, stream: Any) -> None:
        with self._lock:
            if self.cancelled:
                raise asyncio.CancelledError("cancelled before the prediction started")
            stream.start()
            self._stream = stream

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._stream is not None:
                self._stream.cancel()


class LMStudioSession:
    """One LM Studio host and model for `LMStudioProvider`."""

    def __init__(self, host: str, model: str, *, sdk_timeout_s: float | None = None,
                 max_threads: int = 64) -> None:
        self.host = host
        self.model = model
        self.sdk_timeout_s = sdk_timeout_s
        self._lock = threading.Lock()
        self._client: lms.Client | None = None
        self._handle: Any = None
        self._info: Any = None
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="lmq-openmanus")

    # --- connection ----------------------------------------------------------------------

    def handle(self) -> Any:
        """The model handle, connecting (and warming up, from one thread) on first use."""
        with self._lock:
            if self._handle is None:
                self._handle, self._info = self._connect()
            return self._handle

    def _connect(self) -> tuple[Any, Any]:
        if self.sdk_timeout_s is not None:
            lms.set_sync_api_timeout(self.sdk_timeout_s)  # process-wide in SDK 1.5.0
        client = self._client = lms.Client(self.host)  # bare: no probe, straight to the socket
        try:
            with self._mapped_errors():
                client.llm.list_loaded()  # connect /llm from one thread (lazy-connect race)
                handle = client.llm.model(self.model)
                info = handle.get_info()
        except BaseException:
            self._forget_client()
            raise
        return handle, info

    def reset(self) -> None:
        """Drop the client (after a dropped socket: the SDK never reconnects by itself)."""
        with self._lock:
            client, self._client, self._handle = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def close(self) -> None:
        self.reset()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def vision(self) -> bool:
        self.handle()
        return bool(getattr(self._info, "vision", False))

    def context_length(self) -> int:
        with self._mapped_errors():
            return int(self.handle().get_context_length())

    # --- calls ---------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        with self._mapped_errors():
            return int(self.handle().count_tokens(text))

    def tokenize(self, text: str) -> list[int]:
        with self._mapped_errors():
            return list(self.handle().tokenize(text))

    def upload_image(self, url: str) -> dict[str, Any]:
        """An image (data URL, http(s) URL or file path) as a chat-history file part."""
        data = _image_bytes(url)
        self.handle()
        assert self._client is not None
        with self._mapped_errors():
            return dict(self._client.prepare_image(data, name="image").to_dict())

    async def apredict(self, history: dict[str, Any], config: dict[str, Any],
                       timeout_s: float | None, on_text: FragmentCallback | None) -> Reply:
        """Run one prediction without blocking the loop; cancel/timeout cancel it in LM Studio."""
        prediction = _Prediction()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._predict, prediction, history,
                                      config, on_text)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            await _cancel_and_drain(prediction, future)
            raise JobTimeoutError(f"LM Studio at {self.host} did not answer within "
                                  f"{timeout_s:g}s; the prediction was cancelled") from None
        except asyncio.CancelledError:
            await _cancel_and_drain(prediction, future)
            raise

    def _predict(self, prediction: _Prediction, history: dict[str, Any],
                 config: dict[str, Any], on_text: FragmentCallback | None) -> Reply:
        with self._mapped_errors():
            stream = self.handle().respond_stream(history, config=config)
            prediction.start(stream)
            texts: list[str] = []
            calls: list[dict[str, Any]] = []
            # `_iter_events` (SDK 1.5.0, pinned) is how `act()` sees tool calls; the public
            # iterator only yields text fragments.
            for event in stream._iter_events():
                if isinstance(event, PredictionFragmentEvent):
                    _take_fragment(event.arg, texts, on_text)
                elif isinstance(event, PredictionToolCallEvent):
                    request = event.arg
                    calls.append(openai_tool_call(request.id, request.name, request.arguments))
            result = stream.result()
        return Reply(content="".join(texts), tool_calls=calls, stats=stats_of(result.stats),
                     model=getattr(result.model_info, "model_key", None) or self.model)

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        try:
            yield
        except lms.LMStudioModelNotFoundError as exc:
            raise ModelNotAvailableError(self._missing_model_message(exc)) from exc
        except (lms.LMStudioWebsocketError, httpx.TransportError, ConnectionError) as exc:
            self._forget_client()
            raise LMStudioUnavailableError(
                f"LM Studio is not reachable at {self.host} ({exc}). Start LM Studio's server "
                "(`lms server start`) or point LMQ_LMSTUDIO_HOST at it.") from exc
        except lms.LMStudioTimeoutError as exc:
            raise JobTimeoutError(f"LM Studio at {self.host} sent nothing for "
                                  f"{lms.get_sync_api_timeout()}s") from exc
        except (lms.LMStudioServerError, lms.LMStudioPredictionError) as exc:
            if any(marker in str(exc).lower() for marker in _OVERFLOW_MARKERS):
                raise ContextOverflowError(f"prompt does not fit {self.model}'s context: "
                                           f"{exc}") from exc
            raise JobFailedError(f"LM Studio failed the prediction: {exc}") from exc

    def _forget_client(self) -> None:
        client, self._client, self._handle = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _missing_model_message(self, exc: BaseException) -> str:
        available = ""
        with contextlib.suppress(Exception):
            assert self._client is not None
            keys = sorted(m.model_key for m in self._client.llm.list_downloaded())
            available = f" Downloaded LLMs there: {', '.join(keys) or 'none'}."
        return (f"model {self.model!r} is not available in LM Studio at {self.host}.{available} "
                "Download it (`lms get <model>`) or set [llm] model in OpenManus' config.toml "
                f"(`lmq models` prints the snippet). ({exc})")


def _take_fragment(fragment: Any, texts: list[str], on_text: FragmentCallback | None) -> None:
    if getattr(fragment, "reasoning_type", "none") != "none":
        return  # reasoning is not the answer (SDK 1.5.0 would fold it into content)
    texts.append(fragment.content)
    if on_text is not None:
        on_text(fragment.content)


async def _cancel_and_drain(prediction: _Prediction, future: asyncio.Future[Any]) -> None:
    """Cancel in LM Studio, then wait (bounded) for its confirmation before returning."""
    prediction.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(asyncio.shield(future), _DRAIN_S)


def stats_of(stats: Any) -> PredictionStats | None:
    """SDK prediction stats as the project's `PredictionStats` contract."""
    if stats is None:
        return None
    values = {name: getattr(stats, name, None) for name in PredictionStats.model_fields}
    values["time_to_first_token_s"] = getattr(stats, "time_to_first_token_sec", None)
    values["stop_reason"] = str(getattr(stats, "stop_reason", None) or "unknown")
    return PredictionStats.model_validate(values)


def _image_bytes(url: str) -> bytes:
    if url.startswith("data:"):
        return base64.b64decode(url.split(",", 1)[1])
    if url.startswith(("http://", "https://")):
        response = httpx.get(url, timeout=30.0, follow_redirects=True)
        response.raise_for_status()
        return response.content
    return Path(url.removeprefix("file://")).read_bytes()
