"""`Client`, its `llm` and `embedding` namespaces, and the model handles `LLM` and
`EmbeddingModel`: the SDK's sync API, each prediction one pool job.

A handle's methods take the SDK's arguments. `preset=` (a preset stored in the LM Studio
app) is refused: the pool's jobs carry their config. Load arguments of `model()` (`ttl`,
`config`, `on_load_progress`) are accepted and not applied: each worker loads its model once
with the pool's load settings (the SDK, too, does not check them against a loaded model).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import lmstudio as lms

from producers.job_building import check_deadlines, check_priority
from producers.job_queue import JobQueue
from producers.sdk import _act, _config
from producers.sdk._callbacks import Callbacks
from producers.sdk._errors import InvalidRequestError, ModelNotFoundError, translated
from producers.sdk._stream import PredictionStream
from producers.sdk._target import Target, settings_for
from workers.contract import PredictionConfig

ChatInput = lms.Chat | lms.ChatHistoryDataDict | str


class Client:
    """`lms.Client` over the pool: `with Client() as client: client.llm.model(key)`."""

    def __init__(self, target: Target = None, *, priority: str = "normal",
                 expires_s: float | None = None, time_limit_s: float | None = None) -> None:
        """Job options (not in the SDK), for every job of this client: `priority` ("high",
        "normal", "low"); `expires_s`: a job no worker started within this many seconds
        never runs (its result raises JobExpiredError); `time_limit_s`: a prediction still
        running this long after it started is cancelled (the partial result, stop reason
        userStopped)."""
        with translated():
            check_priority(priority)
            deadlines = check_deadlines(expires_s=expires_s, time_limit_s=time_limit_s)
        self.priority = priority
        # passed to every JobQueue submit of this client
        self.job_options: dict[str, Any] = {"priority": priority, **deadlines}
        self.queue = JobQueue(settings_for(target))
        self.llm = LlmNamespace(self)
        self.embedding = EmbeddingNamespace(self)

    def close(self) -> None:
        self.queue.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def served(self, model_key: str | None, kind: str) -> str:
        """`model_key` if a live worker serves it, else ModelNotFoundError naming those that do."""
        with translated():
            served = sorted(self.queue.served_models())
        if model_key is None:
            raise InvalidRequestError(f"name the {kind} to use: the pool serves "
                                      f"{', '.join(served) or 'no models yet'}")
        if model_key not in served:
            raise ModelNotFoundError(
                f"no worker of the pool serves {model_key!r}; it serves "
                f"{', '.join(served) or 'nothing yet'}. Start one with "
                f"`LMQ_MODEL={model_key} celery -A workers worker`")
        return model_key


class LlmNamespace:
    def __init__(self, client: Client) -> None:
        self._client = client

    def model(self, model_key: str | None = None, /, *, ttl: int | None = None,
              config: Any = None, on_load_progress: Any = None) -> LLM:
        return LLM(self._client, self._client.served(model_key, "LLM"))


class EmbeddingNamespace:
    def __init__(self, client: Client) -> None:
        self._client = client

    def model(self, model_key: str | None = None, /, *, ttl: int | None = None,
              config: Any = None, on_load_progress: Any = None) -> EmbeddingModel:
        return EmbeddingModel(self._client, self._client.served(model_key, "embedding model"))


class _Handle:
    def __init__(self, client: Client, model_key: str) -> None:
        self._client = client
        self.identifier = model_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identifier={self.identifier!r})"

    def __getattr__(self, name: str) -> Any:
        # The SDK's other handle methods (tokenize, get_info, unload, ...) ask LM Studio
        # directly; say so instead of a bare AttributeError.
        if not name.startswith("_") and hasattr(getattr(lms, type(self).__name__, None), name):
            raise AttributeError(f"{type(self).__name__}.{name}() asks LM Studio directly and is "
                                 f"not available over the pool: use lmstudio against the LM "
                                 f"Studio host for it")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class LLM(_Handle):
    """`lms.LLM`: respond, respond_stream, complete, complete_stream, act."""

    def respond_stream(self, history: ChatInput, *, response_format: Any = None,
                       config: _config.SdkConfig = None, preset: str | None = None,
                       **callbacks: Any) -> PredictionStream:
        return self.chat_stream(history, _config.job_config(config, response_format), preset,
                                Callbacks(**callbacks))

    def respond(self, history: ChatInput, *, response_format: Any = None,
                config: _config.SdkConfig = None, preset: str | None = None,
                **callbacks: Any) -> lms.PredictionResult:
        return self.respond_stream(history, response_format=response_format, config=config,
                                   preset=preset, **callbacks).wait_for_result()

    def complete_stream(self, prompt: str, *, response_format: Any = None,
                        config: _config.SdkConfig = None, preset: str | None = None,
                        **callbacks: Any) -> PredictionStream:
        checked = _config.job_config(config, response_format)
        _no_preset(preset)
        queue = self._client.queue
        return PredictionStream(queue, self.identifier,
                                lambda streamed: queue.complete(
                                    self.identifier, prompt, config=checked, streamed=streamed,
                                    **self._client.job_options),
                                _config.sdk_config(checked), Callbacks(**callbacks))

    def complete(self, prompt: str, *, response_format: Any = None,
                 config: _config.SdkConfig = None, preset: str | None = None,
                 **callbacks: Any) -> lms.PredictionResult:
        return self.complete_stream(prompt, response_format=response_format, config=config,
                                    preset=preset, **callbacks).wait_for_result()

    def act(self, chat: ChatInput, tools: Iterable[Any], **options: Any) -> lms.ActResult:
        """`lms.LLM.act`: each model round is one job; the tools run here."""
        return _act.act(self, chat, tools, **options)

    def chat_stream(self, history: ChatInput, config: PredictionConfig, preset: str | None,
                    callbacks: Callbacks,
                    tools: list[dict[str, Any]] | None = None) -> PredictionStream:
        """A chat job's stream (also one round of `act`, with the tools in OpenAI format);
        `config` is the checked job config (`_config.job_config`)."""
        _no_preset(preset)
        messages = history_of(history)
        queue = self._client.queue
        return PredictionStream(
            queue, self.identifier,
            lambda streamed: queue.chat(self.identifier, messages, tools=tools, config=config,
                                        streamed=streamed, **self._client.job_options),
            _config.sdk_config(config), callbacks)


class EmbeddingModel(_Handle):
    """`lms.EmbeddingModel`: `embed(text)` -> one vector, `embed(texts)` -> one per text."""

    def embed(self, input: str | Iterable[str]) -> Sequence[float] | Sequence[Sequence[float]]:
        texts = [input] if isinstance(input, str) else list(input)
        with translated():
            vectors: list[list[float]] = self._client.queue.embed(
                self.identifier, texts, **self._client.job_options).result().vectors
        return vectors[0] if isinstance(input, str) else vectors


def history_of(history: ChatInput) -> str | dict[str, Any]:
    """The SDK's chat-history dict (a string stays one user message, as in the SDK).

    `_get_history_for_prediction` is the SDK's own conversion of a Chat to the wire format
    it sends LM Studio; the worker rebuilds the Chat from it with `Chat.from_history`.
    """
    if isinstance(history, str):
        return history
    return dict(lms.Chat.from_history(history)._get_history_for_prediction())


def _no_preset(preset: str | None) -> None:
    if preset is not None:
        raise InvalidRequestError(f"preset={preset!r}: presets live in the LM Studio app, "
                                  "which the pool's jobs do not read; pass config= instead")


# --- the default client (`lms.llm(...)`, `lms.embedding_model(...)`) ----------------------

_default_target: Target = None
_default_client: Client | None = None


def configure_default_client(target: Target = None) -> None:
    """Where the default client sends jobs: Settings, a broker URL, or None (LMQ_*)."""
    global _default_target
    if _default_client is not None:
        raise lms.LMStudioClientError("Default client is already created, cannot set its "
                                      "target: call configure_default_client() first")
    _default_target = target


def get_default_client(target: Target = None) -> Client:
    global _default_client
    if target is not None:
        configure_default_client(target)
    if _default_client is None:
        _default_client = Client(_default_target)
    return _default_client


def llm(model_key: str | None = None, /, **load_options: Any) -> LLM:
    return get_default_client().llm.model(model_key, **load_options)


def embedding_model(model_key: str | None = None, /, **load_options: Any) -> EmbeddingModel:
    return get_default_client().embedding.model(model_key, **load_options)


def reset_default_client() -> None:
    """Close the default client and forget its target (tests, or to point it elsewhere)."""
    global _default_client, _default_target
    previous, _default_client, _default_target = _default_client, None, None
    if previous is not None:
        previous.close()

