"""The `lmstudio` SDK's API over the pool: change only the import line.

    from producers import sdk as lms            # was: import lmstudio as lms
    lms.configure_default_client()              # LMQ_* settings, or a broker URL
    model = lms.llm("llama-3.2-1b-instruct")
    print(model.respond("What is the meaning of life?").content)
    for fragment in model.respond_stream(chat, config={"temperature": 0.6, "maxTokens": 50}):
        print(fragment.content, end="", flush=True)

Every prediction is one pool job (an `act()` round too); the results, fragments, stats and
exceptions are the SDK's own classes, and the callbacks fire here, in the SDK's order.
`Client`, `AsyncClient`, `llm()`, `embedding_model()` take the pool's `Settings` or a broker
URL where the SDK takes an LM Studio host (a host is accepted and left to the workers).
The SDK's types scripts use (`Chat`, `PredictionResult`, `BaseModel`, ...) are re-exported.
Errors: see `producers.sdk._errors` (each derives from the pool's error and the SDK's).
"""

from lmstudio import (
    ActResult,
    AnyChatMessage,
    AnyChatMessageDict,
    AssistantResponse,
    BaseModel,
    Chat,
    ChatHistoryData,
    ChatHistoryDataDict,
    LlmInfo,
    LlmLoadModelConfig,
    LlmPredictionConfig,
    LlmPredictionConfigDict,
    LlmPredictionFragment,
    LlmPredictionStats,
    LMStudioCancelledError,
    LMStudioClientError,
    LMStudioError,
    LMStudioModelNotFoundError,
    LMStudioPredictionError,
    LMStudioRuntimeError,
    LMStudioServerError,
    LMStudioTimeoutError,
    LMStudioValueError,
    LMStudioWebsocketError,
    PredictionResult,
    PredictionRoundResult,
    SystemPrompt,
    TextData,
    ToolCallRequest,
    ToolCallResultData,
    ToolFunctionDef,
    ToolResultMessage,
    UserMessage,
)

from producers.sdk._async import AsyncClient, AsyncEmbeddingModel, AsyncLLM, AsyncPredictionStream
from producers.sdk._client import (
    LLM,
    Client,
    EmbeddingModel,
    configure_default_client,
    embedding_model,
    get_default_client,
    llm,
    reset_default_client,
)
from producers.sdk._errors import (
    ContextTooLongError,
    InvalidRequestError,
    ModelNotFoundError,
    PoolTimeoutError,
    PoolUnavailableError,
    PredictionExpiredError,
    PredictionFailedError,
)
from producers.sdk._stream import PredictionStream

__all__ = [
    "LLM",
    "ActResult",
    "AnyChatMessage",
    "AnyChatMessageDict",
    "AssistantResponse",
    "AsyncClient",
    "AsyncEmbeddingModel",
    "AsyncLLM",
    "AsyncPredictionStream",
    "BaseModel",
    "Chat",
    "ChatHistoryData",
    "ChatHistoryDataDict",
    "Client",
    "ContextTooLongError",
    "EmbeddingModel",
    "InvalidRequestError",
    "LMStudioCancelledError",
    "LMStudioClientError",
    "LMStudioError",
    "LMStudioModelNotFoundError",
    "LMStudioPredictionError",
    "LMStudioRuntimeError",
    "LMStudioServerError",
    "LMStudioTimeoutError",
    "LMStudioValueError",
    "LMStudioWebsocketError",
    "LlmInfo",
    "LlmLoadModelConfig",
    "LlmPredictionConfig",
    "LlmPredictionConfigDict",
    "LlmPredictionFragment",
    "LlmPredictionStats",
    "ModelNotFoundError",
    "PoolTimeoutError",
    "PoolUnavailableError",
    "PredictionExpiredError",
    "PredictionFailedError",
    "PredictionResult",
    "PredictionRoundResult",
    "PredictionStream",
    "SystemPrompt",
    "TextData",
    "ToolCallRequest",
    "ToolCallResultData",
    "ToolFunctionDef",
    "ToolResultMessage",
    "UserMessage",
    "configure_default_client",
    "embedding_model",
    "get_default_client",
    "llm",
    "reset_default_client",
]


def __getattr__(name: str) -> object:
    """The rest of `lmstudio`'s types resolve to the SDK's own; its functions that talk to
    LM Studio directly (list_loaded_models, prepare_image, ...) are not part of the pool."""
    import inspect

    import lmstudio

    found = getattr(lmstudio, name, None)
    if found is None or name.startswith("_"):
        raise AttributeError(f"module 'producers.sdk' has no attribute {name!r}")
    if name.endswith("sync_api_timeout"):
        raise AttributeError(f"lms.{name}: the workers' SDK timeout is the pool's setting "
                             "LMQ_SDK_TIMEOUT_S; a pool client waits for queued jobs")
    if inspect.isfunction(found) or inspect.ismodule(found):
        raise AttributeError(f"lms.{name} talks to an LM Studio host directly, which the pool's "
                             f"workers own: call lmstudio.{name} against that host instead")
    return found
