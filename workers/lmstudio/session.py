"""The worker's one connection to LM Studio: the only module that imports the `lmstudio` SDK.

One `Session` per worker process holds one scoped `lms.Client` to `LMQ_LMSTUDIO_HOST`
(the host is always passed: the SDK never probes port 1234) and a handle to the pinned,
loaded model. Worker threads share it (lmstudio-protocol.md §5.2): `warm()` connects the
`llm`, `embedding` and `system` namespaces from one thread before jobs run, because the
SDK's lazy connect races when many threads make their first call at once.

Errors: every SDK exception is mapped to our error tree here (`sdk_errors`), nowhere else:

    LMStudioWebsocketError, unreachable host, LMStudioTimeoutError -> LMStudioUnavailableError
    LMStudioModelNotFoundError                                  -> ModelNotAvailableError
    LMStudioValueError (bad history / config)                    -> InvalidJobError
    any other LMStudioError (server, prediction, runtime)        -> JobFailedError

Dropped connections: the SDK never reconnects a namespace. `recover(generation)` probes the
model's namespace; if it is dead it closes it (`client.llm.close()`) and reconnects it
eagerly, once, under a lock: threads that failed on the same dead socket pass the
`generation` they saw, and only the first one reconnects (the others see a newer
generation and just retry). Predictions are in `workers.lmstudio.prediction`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import lmstudio as lms

from workers.error import (
    InvalidJobError,
    JobFailedError,
    LmqError,
    LMStudioUnavailableError,
    ModelNotAvailableError,
)

log = logging.getLogger(__name__)


@contextmanager
def sdk_errors(what: str) -> Iterator[None]:
    """Map SDK exceptions raised while doing `what` onto the lmstudio-queue error tree."""
    try:
        yield
    except LmqError:
        raise
    except lms.LMStudioTimeoutError as exc:
        raise LMStudioUnavailableError(f"{what}: no message from LM Studio in time") from exc
    except lms.LMStudioWebsocketError as exc:
        raise LMStudioUnavailableError(f"{what}: {_one_line(exc)}") from exc
    except lms.LMStudioModelNotFoundError as exc:
        raise ModelNotAvailableError(f"{what}: {_one_line(exc)}") from exc
    except lms.LMStudioValueError as exc:
        raise InvalidJobError(f"{what}: {_one_line(exc)}") from exc
    except lms.LMStudioClientError as exc:
        if "not reachable" in str(exc):
            raise LMStudioUnavailableError(f"{what}: {_one_line(exc)}") from exc
        raise JobFailedError(f"{what}: {_one_line(exc)}") from exc
    except lms.LMStudioError as exc:
        raise JobFailedError(f"{what}: {_one_line(exc)}") from exc
    except (httpx.HTTPError, OSError) as exc:
        raise LMStudioUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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
    """One scoped lms.Client, the pinned model, and safe recovery from dropped sockets."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.generation = 0
        self.model: LoadedModel | None = None
        self._client: Any = None
        self._handle: Any = None
        self._load_config: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.overhead: TemplateOverhead | None = None
        self._vision: bool | None = None  # the pinned model's `vision` flag, once read

    # --- start-up -----------------------------------------------------------------------

    @staticmethod
    def set_timeout(timeout_s: float) -> None:
        """The SDK's wait for the next message (process-global)."""
        lms.set_sync_api_timeout(timeout_s)

    def open(self) -> None:
        """Open the client (HTTP probe + websocket); LMStudioUnavailableError if down."""
        client = lms.Client(self.host)
        try:
            with sdk_errors(f"connect to LM Studio at {self.host}"):
                client.__enter__()
                client.system.list_downloaded_models()  # connects /system
        except BaseException:
            client.close()
            raise
        self._client = client

    def downloaded(self) -> list[DownloadedModel]:
        with sdk_errors("list downloaded models"):
            listing = self._client.list_downloaded_models()
        return [_downloaded(entry) for entry in listing]

    def load(self, model: DownloadedModel, load_config: dict[str, Any]) -> LoadedModel:
        """Get or load the pinned model (no idle TTL: the worker owns its lifetime)."""
        namespace = self._namespace(model.kind)
        with sdk_errors(f"load {model.key}"):
            handle = self._get_or_load(namespace, model.key, load_config)
            info = handle.get_info()
            context_length = int(handle.get_context_length())
            # What the instance was loaded with: getOrLoad ignores our config when the
            # model was already loaded (by LM Studio's UI or another client).
            reported = dict(handle.get_load_config().to_dict())
        self._handle, self._load_config = handle, load_config
        self.model = LoadedModel(
            key=model.key, kind=model.kind, identifier=handle.identifier,
            context_length=context_length,
            identity=_identity(info, handle.identifier, context_length, reported),
            load_config=reported)
        return self.model

    @staticmethod
    def _get_or_load(namespace: Any, key: str, load_config: dict[str, Any]) -> Any:
        """The loaded instance of `key`, loading it explicitly when there is none.

        Not `getOrLoad` for the load itself: LM Studio counts what getOrLoad loads as a JIT
        load, and with Auto-Evict (its default) a JIT load unloads the other JIT-loaded
        models, so a second worker on another model would unload the first one's. A load of
        our own (identifier = the key) is never evicted; two workers starting at once both
        try it, and the one told the identifier already exists gets the other's instance.
        """
        loaded = namespace.remote_call("listLoaded") or []
        if any(key in (info.get("modelKey"), info.get("identifier")) for info in loaded):
            return namespace.model(key, ttl=None)  # getOrLoad: only gets it
        try:
            return namespace.load_new_instance(key, key, ttl=None, config=load_config or None)
        except lms.LMStudioServerError as exc:
            if "already exists" not in str(exc):
                raise
            return namespace.model(key, ttl=None)

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
            with sdk_errors("read the load config"):
                raw = namespace.remote_call("getLoadConfig", request)
        except (LmqError, AttributeError, TypeError, ValueError) as exc:
            log.warning("could not read %s's load config from LM Studio (%s)",
                        self.model.key, exc)
            return {}
        return {f["key"]: f.get("value") for f in (raw or {}).get("fields", [])}

    def warm(self) -> None:
        """Connect every namespace jobs use from this one thread (avoids the connect race)."""
        with sdk_errors("warm up the LM Studio client"):
            self._client.llm.list_loaded()
            self._client.embedding.list_loaded()
            self._client.system.list_downloaded_models()

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
        if self._client is None:
            return
        if unload and self._handle is not None:
            try:
                with sdk_errors("unload model"):
                    self._handle.unload()
            except LmqError as exc:
                log.warning("could not unload %s: %s", self.model and self.model.key, exc)
        self._client.close()
        self._client = None

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
            raise InvalidJobError(f"chat history rejected: {_one_line(exc)}") from None

    def count_chat_tokens(self, chat: Any, tool_definitions: Sequence[dict[str, Any]]) -> int:
        """Prompt tokens of a chat: LM Studio applies the model's template, then counts."""
        opts = {"toolDefinitions": list(tool_definitions)} if tool_definitions else {}
        with sdk_errors("count prompt tokens"):
            formatted = self.handle.apply_prompt_template(chat, opts=opts)
            return int(self.handle.count_tokens(formatted))

    def count_tokens(self, text: str) -> int:
        with sdk_errors("count tokens"):
            return int(self.handle.count_tokens(text))

    def takes_images(self) -> bool:
        """Does the pinned model take images (LM Studio's `vision` flag)? Asked once."""
        if self._vision is None:
            with sdk_errors("read the model's info"):
                self._vision = bool(getattr(self.handle.get_info(), "vision", False))
        return self._vision

    def prepare_image(self, data: bytes, name: str) -> dict[str, Any]:
        """Upload an image to LM Studio (`files.uploadFileBase64`): its file-handle dict."""
        with sdk_errors(f"upload image {name}"):
            return dict(self._client.prepare_image(data, name=name).to_dict())

    def embed(self, text: str) -> list[float]:
        with sdk_errors("embed"):
            return list(self.handle.embed(text))

    # --- recovery -----------------------------------------------------------------------

    def recover(self, seen_generation: int) -> None:
        """After LMStudioUnavailableError: reconnect the model's namespace if it is dead.

        Safe with other threads: only the first caller per generation reconnects.
        Raises LMStudioUnavailableError if LM Studio cannot be reached now.
        """
        with self._lock:
            if self.generation != seen_generation or self.model is None:
                return
            namespace = self._namespace(self.model.kind)
            if self._alive(namespace):
                return
            log.warning("LM Studio connection lost; reconnecting %s", self.host)
            namespace.close()
            with sdk_errors("reconnect to LM Studio"):
                namespace.connect()
                self._handle = namespace.model(self.model.key, ttl=None,
                                               config=self._load_config or None)
            self.generation += 1
            log.info("reconnected to LM Studio at %s (generation %d)", self.host,
                     self.generation)

    def _alive(self, namespace: Any) -> bool:
        try:
            namespace.list_loaded()
        except lms.LMStudioError:
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

