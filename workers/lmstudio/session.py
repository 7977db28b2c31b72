"""The worker's one connection to LM Studio (with `prediction`, the SDK's only users).

One `Session` per worker process holds one scoped `lms.AsyncClient` to `LMQ_LMSTUDIO_HOST`
(the host is always passed: the SDK never probes port 1234) and a handle to the pinned,
loaded model. The client lives on the process's one event loop thread (`SdkLoop`, issue
22): every SDK call runs there, so websocket messages are consumed where they arrive. The
methods here are for jobs: each runs one coroutine on the loop and waits for its result
(a job greenlet awaits it there; another thread hops over and back: one hop per call,
not one per message); predictions stream on the loop itself
(`workers.lmstudio.prediction`). The async client connects every
namespace when it opens, so there is no lazy-connect race between threads to avoid.

Timeouts: every call here waits at most `Session.timeout_s` (LMQ_SDK_TIMEOUT_S) for its
next message from LM Studio (`quiet_timeout`); a wait that runs out is
LMStudioUnavailableError, as the sync SDK's LMStudioTimeoutError was. SDK errors are mapped
to ours by `workers.lmstudio.sdk_call.sdk_errors`.

Dropped connections: the SDK never reconnects a namespace. `recover(generation)` probes the
model's namespace; if it is dead it closes it (`client.llm.disconnect()`) and reconnects it,
once, under a lock: threads that failed on the same dead socket pass the `generation` they
saw, and only the first one reconnects (the others see a newer generation and just
retry). Predictions are in `workers.lmstudio.prediction`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import lmstudio as lms

from workers import green
from workers.error import InvalidJobError, LmqError, LMStudioUnavailableError
from workers.lmstudio import ws_json
from workers.lmstudio.loop import SdkLoop
from workers.lmstudio.sdk_call import one_line, quiet_timeout, sdk_errors

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DownloadedModel:
    """One entry of LM Studio's download listing."""

    key: str
    kind: str  # "llm" | "embedding"
    size_bytes: int
    path: str | None
    architecture: str | None
    max_context_length: int | None
    format: str | None = None  # "gguf" (llama.cpp engine), "safetensors" (MLX), ...


@dataclass(frozen=True)
class LoadedModel:
    """The pinned model as loaded in LM Studio."""

    key: str
    kind: str
    identifier: str
    context_length: int
    identity: dict[str, Any]  # ModelIdentity fields
    load_config: dict[str, Any]  # as LM Studio reports it (camelCase), {} if it would not say


class Session:
    """One scoped lms.AsyncClient on its loop, the pinned model, and safe recovery."""

    timeout_s: float = 60.0  # LMQ_SDK_TIMEOUT_S: the longest wait for LM Studio's next message

    def __init__(self, host: str) -> None:
        self.host = host
        self.generation = 0
        self.model: LoadedModel | None = None
        self._loop: SdkLoop | None = None
        self._client: Any = None
        self._handle: Any = None
        self._load_config: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.overhead: TemplateOverhead | None = None
        self._vision: bool | None = None  # the pinned model's `vision` flag, once read

    # --- start-up -----------------------------------------------------------------------

    @classmethod
    def set_timeout(cls, timeout_s: float) -> None:
        """The wait for LM Studio's next message (every session of the process)."""
        cls.timeout_s = timeout_s

    def open(self) -> None:
        """Open the client on a new loop (HTTP probe + websockets); LMStudioUnavailableError
        if LM Studio is down."""
        ws_json.install()  # LM Studio's messages decoded by msgspec (ws_json says why)
        loop = SdkLoop()
        try:
            with sdk_errors(f"connect to LM Studio at {self.host}"):
                self._client = loop.run(self._open_client())
        except BaseException:
            loop.stop()
            raise
        self._loop = loop

    async def _open_client(self) -> Any:
        client = lms.AsyncClient(self.host)
        try:
            async with quiet_timeout(self.timeout_s):
                await client.__aenter__()  # probes the host, connects every namespace
                await client.system.list_downloaded_models()  # answers: it is LM Studio
        except BaseException:
            with suppress(Exception):
                await client.aclose()
            raise
        return client

    @property
    def loop(self) -> SdkLoop:
        if self._loop is None:
            raise LMStudioUnavailableError("the LM Studio session is not open")
        return self._loop

    def call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run the SDK coroutine `make()` on the loop, waiting at most `timeout_s` for
        LM Studio; SDK errors mapped (from a thread: one hop there and back)."""
        return self.loop.run(self.on_loop(what, make))

    async def on_loop(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """`call` for code already on the loop: `make()` awaited, at most `timeout_s`
        without a message from LM Studio, SDK errors mapped."""
        with sdk_errors(what):
            async with quiet_timeout(self.timeout_s):
                return await make()

    def downloaded(self) -> list[DownloadedModel]:
        listing = self.call("list downloaded models", lambda: self._client.list_downloaded_models())
        return [_downloaded(entry) for entry in listing]

    def load(self, model: DownloadedModel, load_config: dict[str, Any]) -> LoadedModel:
        """Get or load the pinned model (no idle TTL: the worker owns its lifetime)."""
        namespace = self._namespace(model.kind)
        handle, info, context_length, reported = self.loop.run(
            self._load(namespace, model.key, load_config))
        self._handle, self._load_config = handle, load_config
        self.model = LoadedModel(
            key=model.key, kind=model.kind, identifier=handle.identifier,
            context_length=context_length,
            identity=_identity(info, handle.identifier, context_length, reported),
            load_config=reported)
        return self.model

    async def _load(self, namespace: Any, key: str, load_config: dict[str, Any]
                    ) -> tuple[Any, Any, int, dict[str, Any]]:
        with sdk_errors(f"load {key}"):
            async with quiet_timeout(self.timeout_s) as heard:
                handle = await self._get_or_load(namespace, key, load_config, heard)
                info = await handle.get_info()
                context_length = int(await handle.get_context_length())
                # What the instance was loaded with: getOrLoad ignores our config when the
                # model was already loaded (by LM Studio's UI or another client).
                reported = dict((await handle.get_load_config()).to_dict())
        return handle, info, context_length, reported

    @staticmethod
    async def _get_or_load(namespace: Any, key: str, load_config: dict[str, Any],
                           heard: Callable[[], None]) -> Any:
        """The loaded instance of `key`, loading it explicitly when there is none.

        Not `getOrLoad` for the load itself: LM Studio counts what getOrLoad loads as a JIT
        load, and with Auto-Evict (its default) a JIT load unloads the other JIT-loaded
        models, so a second worker on another model would unload the first one's. A load of
        our own (identifier = the key) is never evicted; two workers starting at once both
        try it, and the one told the identifier already exists gets the other's instance.
        A load's progress messages count as LM Studio talking (`heard`): a slow load is not
        a timeout.
        """
        loaded = await namespace.remote_call("listLoaded") or []
        if any(key in (info.get("modelKey"), info.get("identifier")) for info in loaded):
            return await namespace.model(key, ttl=None)  # getOrLoad: only gets it
        try:
            return await namespace.load_new_instance(
                key, key, ttl=None, config=load_config or None,
                on_load_progress=lambda _progress: heard())
        except lms.LMStudioServerError as exc:
            if "already exists" not in str(exc):
                raise
            return await namespace.model(key, ttl=None)

    def instance_load_fields(self) -> dict[str, Any]:
        """The loaded instance's config as LM Studio's own keys ({} if it will not say).

        SDK 1.5.0 parses getLoadConfig into LlmLoadModelConfig and drops the keys it does
        not know, among them LM Studio 0.4's `llm.load.numParallelSessions` and
        `llm.load.useUnifiedKvCache`, which admission needs: so the same RPC is made here
        and its raw fields kept (the request type is the SDK's own, `_API_TYPES`).
        """
        if self.model is None:
            return {}
        namespace = self._namespace(self.model.kind)
        try:
            request = namespace._API_TYPES.REQUEST_LOAD_CONFIG._from_api_dict(
                {"specifier": {"type": "query",
                               "query": {"identifier": self.model.identifier}}})
            raw = self.call("read the load config",
                            lambda: namespace.remote_call("getLoadConfig", request))
        except (LmqError, AttributeError, TypeError, ValueError) as exc:
            log.warning("could not read %s's load config from LM Studio (%s)",
                        self.model.key, exc)
            return {}
        return {f["key"]: f.get("value") for f in (raw or {}).get("fields", [])}

    def warm(self) -> None:
        """Check the namespaces jobs use answer (the async client connected them all)."""

        async def ask_each() -> None:
            await self._client.llm.list_loaded()
            await self._client.embedding.list_loaded()
            await self._client.system.list_downloaded_models()

        self.call("warm up the LM Studio client", ask_each)

    def measure_overhead(self) -> TemplateOverhead | None:
        """Tokens the model's template and tokenizer add around text (4 RPCs, once).

        Used for the local upper bound of prompt tokens (`workers.jobs.prompt_bound`); for
        embedding models only the text overhead (1 RPC); None (every prompt is counted by
        LM Studio) when it fails.
        """
        if self.model is None:
            return None
        if self.model.kind != "llm":
            return self._measure_text_overhead()
        try:
            one = self.count_chat_tokens(self.chat(_history("x")), ())
            three = self.count_chat_tokens(self.chat(_history("x", "y", "z")), ())
            text = self.count_tokens("x")
        except LmqError as exc:
            log.warning("could not measure the prompt template's overhead (%s): every "
                        "prompt is counted by LM Studio", exc)
            return None
        self.overhead = TemplateOverhead(chat_base=max(0, one - 1),
                                         per_message=max(1, (three - one - 2 + 1) // 2),
                                         text_base=max(0, text - 1))
        return self.overhead

    def _measure_text_overhead(self) -> TemplateOverhead | None:
        """Embedding models: only what the tokenizer adds around a text (1 RPC)."""
        try:
            text = self.count_tokens("x")
        except LmqError as exc:
            log.warning("could not measure the tokenizer's overhead (%s): every text is "
                        "counted by LM Studio", exc)
            return None
        self.overhead = TemplateOverhead(chat_base=0, per_message=0, text_base=max(0, text - 1))
        return self.overhead

    def close(self, unload: bool = False) -> None:
        if self._client is None or self._loop is None:
            return
        if unload and self._handle is not None:
            try:
                self.call("unload model", self._handle.unload)
            except LmqError as exc:
                log.warning("could not unload %s: %s", self.model and self.model.key, exc)
        try:
            self._loop.run(self._client.aclose())
        except Exception as exc:  # noqa: BLE001 - closing a dead client: nothing to keep
            log.debug("closing the LM Studio client: %s", exc)
        self._client = None
        self._loop.stop()
        self._loop = None

    # --- job calls ----------------------------------------------------------------------

    @property
    def handle(self) -> Any:
        if self._handle is None:
            raise LMStudioUnavailableError("the LM Studio session is not open")
        return self._handle

    def chat(self, history: dict[str, Any]) -> Any:
        """Validate a chat-history dict with the SDK (bad history -> InvalidJobError)."""
        try:
            return lms.Chat.from_history(history)  # type: ignore[arg-type]
        except (lms.LMStudioError, ValueError, TypeError) as exc:
            raise InvalidJobError(f"chat history rejected: {one_line(exc)}") from None

    def count_chat_tokens(self, chat: Any, tool_definitions: Sequence[dict[str, Any]]) -> int:
        """Prompt tokens of a chat: LM Studio applies the model's template, then counts."""
        opts = {"toolDefinitions": list(tool_definitions)} if tool_definitions else {}
        handle = self.handle

        async def count() -> int:
            formatted = await handle.apply_prompt_template(chat, opts=opts)
            return int(await handle.count_tokens(formatted))

        return self.call("count prompt tokens", count)

    def count_tokens(self, text: str) -> int:
        handle = self.handle
        return int(self.call("count tokens", lambda: handle.count_tokens(text)))

    def takes_images(self) -> bool:
        """Does the pinned model take images (LM Studio's `vision` flag)? Asked once."""
        if self._vision is None:
            info = self.call("read the model's info", self.handle.get_info)
            self._vision = bool(getattr(info, "vision", False))
        return self._vision

    def prepare_image(self, data: bytes, name: str) -> dict[str, Any]:
        """Upload an image to LM Studio (`files.uploadFileBase64`): its file-handle dict."""
        handle = self.call(f"upload image {name}",
                           lambda: self._client.prepare_image(data, name=name))
        return dict(handle.to_dict())

    def embed(self, text: str) -> list[float]:
        handle = self.handle
        return list(self.call("embed", lambda: handle.embed(text)))

    async def aembed(self, text: str) -> list[float]:
        """`embed` on the loop (`workers.jobs.embedding` runs a job's texts there)."""
        handle = self.handle
        return list(await self.on_loop("embed", lambda: handle.embed(text)))

    async def acount_tokens(self, text: str) -> int:
        """`count_tokens` on the loop."""
        handle = self.handle
        return int(await self.on_loop("count tokens", lambda: handle.count_tokens(text)))

    # --- recovery -----------------------------------------------------------------------

    def recover(self, seen_generation: int) -> None:
        """After LMStudioUnavailableError: reconnect the model's namespace if it is dead.

        Safe with other threads: only the first caller per generation reconnects (a job
        greenlet calls it in a thread: the lock may be held across the reconnect).
        Raises LMStudioUnavailableError if LM Studio cannot be reached now.
        """
        if green.in_job_greenlet():
            return green.blocking(self.recover, seen_generation)
        with self._lock:
            if self.generation != seen_generation or self.model is None:
                return
            namespace = self._namespace(self.model.kind)
            if self._alive(namespace):
                return
            log.warning("LM Studio connection lost; reconnecting %s", self.host)
            self._handle = self.call("reconnect to LM Studio",
                                     lambda: self._reconnect(namespace))
            self.generation += 1
            log.info("reconnected to LM Studio at %s (generation %d)", self.host,
                     self.generation)

    async def _reconnect(self, namespace: Any) -> Any:
        with suppress(Exception):  # a dead socket may fail to close: it is gone either way
            await namespace.disconnect()
        await namespace.connect()
        assert self.model is not None
        return await namespace.model(self.model.key, ttl=None,
                                     config=self._load_config or None)

    def _alive(self, namespace: Any) -> bool:
        try:
            self.call("probe LM Studio", namespace.list_loaded)
        except LmqError:
            return False
        return True

    def _namespace(self, kind: str) -> Any:
        return self._client.embedding if kind == "embedding" else self._client.llm


@dataclass(frozen=True)
class TemplateOverhead:
    """Tokens the pinned model adds around text, measured once at start-up."""

    chat_base: int  # a one-message chat, minus its one text token
    per_message: int  # each further message, minus its text
    text_base: int  # a plain text (BOS and the like), minus its one text token


def _history(*texts: str) -> dict[str, Any]:
    roles = ("user", "assistant")
    return {"messages": [{"role": roles[i % 2], "content": [{"type": "text", "text": t}]}
                         for i, t in enumerate(texts)]}


def _downloaded(entry: Any) -> DownloadedModel:
    info = entry.info
    return DownloadedModel(
        key=entry.model_key, kind=entry.type, size_bytes=int(info.size_bytes),
        path=getattr(info, "path", None), architecture=getattr(info, "architecture", None),
        max_context_length=getattr(info, "max_context_length", None),
        format=getattr(info, "format", None),
    )


def _identity(info: Any, identifier: str, context_length: int,
              load_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "model_key": info.model_key, "identifier": identifier,
        "display_name": getattr(info, "display_name", None),
        "architecture": getattr(info, "architecture", None),
        "format": getattr(info, "format", None), "path": getattr(info, "path", None),
        "size_bytes": getattr(info, "size_bytes", None), "context_length": context_length,
        "max_context_length": getattr(info, "max_context_length", None),
        "vision": getattr(info, "vision", None),
        "trained_for_tool_use": getattr(info, "trained_for_tool_use", None),
        "load_config": load_config,
    }

