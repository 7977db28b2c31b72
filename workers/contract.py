"""Job and result contracts shared by producers and workers.

Both sides import this module; it imports neither Celery tasks nor the LM Studio SDK.
Jobs travel as JSON dicts (`model_dump(mode="json")`) in the first task argument, results
come back the same way. Task and queue names here are product decisions: keep them stable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TASK_CHAT = "lmq.chat"
TASK_COMPLETE = "lmq.complete"
TASK_EMBED = "lmq.embed"
TASK_NAMES = (TASK_CHAT, TASK_COMPLETE, TASK_EMBED)

QUEUE_PREFIX = "lmq."
KEY_PREFIX = "lmq:"  # every Redis key we own starts with this

# Custom task state reported while a job runs (Celery's own states cover the rest).
PROGRESS = "PROGRESS"

# What an embedding engine adds around a text before embedding it, at most, and what the
# token counts we get leave out: LM Studio's countTokens counts the text alone, while its
# llama.cpp engine embeds the text tokenized with special tokens (common_tokenize(..., true,
# true), as llama.cpp's examples/embedding/embedding.cpp) and truncates an input over the
# loaded context to the context, dropping its tail and end token without an error (LM
# Studio's log: "Number of tokens in input string (634) exceeds model context length (512).
# Truncating to 512 tokens."; github.com/curvedinf/dir-assistant/issues/19). llama.cpp's
# tokenizer (src/llama-vocab.cpp, llama_vocab::impl::tokenize) adds at most two: [CLS] and
# [SEP] for WordPiece (BERT, nomic, bge, mxbai), BOS and/or EOS for SentencePiece/BPE/Unigram
# (e5 and bge-m3's <s> </s>, EmbeddingGemma's BOS/EOS, Qwen3-Embedding's EOS alone). LM
# Studio exposes no count of them, so both the corpus chunker and the worker's context check
# keep this many tokens of the context free: at most one token wasted for a one-token model.
EMBEDDING_SPECIAL_TOKENS = 2

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_MODEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")


def queue_name(model_key: str) -> str:
    """The queue that the workers pinned to `model_key` consume."""
    return f"{QUEUE_PREFIX}{model_key}"


def model_from_queue(queue: str) -> str | None:
    return queue[len(QUEUE_PREFIX) :] if queue.startswith(QUEUE_PREFIX) else None


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# --------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------


# Today's short names, kept as aliases of the SDK's prediction-config keys.
PREDICTION_ALIASES = {"max_tokens": "maxTokens", "top_p": "topPSampling",
                      "top_k": "topKSampling", "stop": "stopStrings", "json_schema": "structured"}


def sdk_key(key: str) -> str:
    """The SDK's camelCase name of a prediction-config key (alias, snake_case or camelCase)."""
    if key in PREDICTION_ALIASES:
        return PREDICTION_ALIASES[key]
    first, *rest = key.split("_")
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


def sdk_keyed(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with its top-level keys renamed to the SDK's (nested ones: the SDK does it).

    None means unset and is dropped; `json_schema` becomes `structured` JSON output; a key
    given under two names is an error rather than a silent pick of one of them.
    """
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in config.items():
        if value is None:
            continue
        name = "seed" if key == "seed" else sdk_key(str(key))
        if key == "json_schema":
            value = {"type": "json", "jsonSchema": value}
        if name in out:
            raise ValueError(f"{name} is given twice (as {given_as[name]!r} and {key!r}): "
                             "keep one")
        out[name], given_as[name] = value, str(key)
    return out


class PredictionConfig(_Contract):
    """A job's prediction config: the SDK's `LlmPredictionConfig` as plain JSON, plus `seed`.

    Keys are the SDK's camelCase names (snake_case and the aliases in PREDICTION_ALIASES are
    renamed on the way in), values are sent to LM Studio as given. This module cannot
    import the SDK, so the values are checked against the SDK's own schema by producers
    (`producers.prediction_config`) and again at the worker's LM Studio boundary
    (`workers.lmstudio.prediction_config`). `seed` is ours: LM Studio seeds at load time.
    """

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    seed: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _sdk_keys(cls, data: Any) -> Any:
        if isinstance(data, PredictionConfig):
            return data
        return sdk_keyed(data) if isinstance(data, Mapping) else data

    def sdk_dict(self) -> dict[str, Any]:
        """The SDK config dict (camelCase keys, without `seed`)."""
        return {key: value for key, value in (self.model_extra or {}).items()
                if value is not None}

    @property
    def max_tokens(self) -> int | None:
        """The output-token limit, or None (no limit: maxTokens false or -1)."""
        value = self.sdk_dict().get("maxTokens")
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
            else None

    @property
    def temperature(self) -> float | None:
        return self.sdk_dict().get("temperature")

    @property
    def top_p(self) -> Any:
        return self.sdk_dict().get("topPSampling")

    @property
    def top_k(self) -> Any:
        return self.sdk_dict().get("topKSampling")

    @property
    def stop(self) -> list[str]:
        return list(self.sdk_dict().get("stopStrings") or [])

    @property
    def json_schema(self) -> dict[str, Any] | None:
        """The JSON schema of structured output, if the config asks for JSON."""
        structured = self.sdk_dict().get("structured")
        if isinstance(structured, Mapping) and structured.get("type") == "json":
            return structured.get("jsonSchema")
        return None


class ChatMessage(_Contract):
    """One OpenAI-style chat message."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ToolFunction(_Contract):
    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(_Contract):
    """A tool in OpenAI function format: {"type": "function", "function": {...}}."""

    type: Literal["function"]
    function: ToolFunction


class _JobBase(_Contract):
    model: str = Field(description="Model key; selects the queue lmq.<model>.")
    submitted_at: float | None = Field(None, description="Epoch seconds when enqueued.")
    batch_id: str | None = None
    priority: Literal["high", "normal", "low"] = Field(
        "normal", description="Workers take the most urgent waiting job first (broker lists "
        "per priority); a job waiting longer than LMQ_PRIORITY_AGING_S counts one higher.")
    tenant: str | None = Field(
        None, pattern=TENANT_PATTERN, description="Who the job is for (e.g. an API key's "
        "tenant). At equal priority, the tenant with the least recent usage takes next "
        "(fair share, Redis broker).")
    expires_s: float | None = Field(
        None, gt=0, description="A job not started within this many seconds of submitted_at "
        "never runs: it fails with JobExpiredError.")
    time_limit_s: float | None = Field(
        None, gt=0, description="A running job is cancelled this many seconds after it "
        "started: REVOKED with its partial result and the reason.")

    @field_validator("model")
    @classmethod
    def _model_key(cls, key: str) -> str:
        if not _MODEL_KEY.match(key):
            raise ValueError(f"{key!r} is not a model key (see `lmq models`)")
        return key


class ChatJob(_JobBase):
    kind: Literal["chat"] = "chat"
    messages: str | list[ChatMessage] | dict[str, Any] = Field(
        description="A prompt string, OpenAI-style messages, or an SDK chat-history dict."
    )
    system_prompt: str | None = None
    tools: list[Tool] | None = None
    config: PredictionConfig = Field(default_factory=PredictionConfig)

    @field_validator("messages")
    @classmethod
    def _history_shape(cls, value: Any) -> Any:
        if isinstance(value, dict) and not isinstance(value.get("messages"), list):
            raise ValueError("a chat-history dict needs a 'messages' list")
        if isinstance(value, list | str) and not value:
            raise ValueError("messages must not be empty")
        return value


class CompletionJob(_JobBase):
    kind: Literal["completion"] = "completion"
    prompt: str = Field(min_length=1)
    config: PredictionConfig = Field(default_factory=PredictionConfig)


class EmbeddingJob(_JobBase):
    kind: Literal["embedding"] = "embedding"
    texts: list[str] = Field(min_length=1)
    exact_token_counts: bool = Field(
        True, description="Count every text's tokens with LM Studio (1 RPC per text) before "
        "embedding it. False: a local upper bound (UTF-8 bytes + the tokenizer's overhead) "
        "guards the context, LM Studio counts only texts whose bound exceeds it, and the "
        "result's token_counts are those bounds (token_counts_exact=False).")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="How the result carries the vectors (as in OpenAI's embeddings "
        "API): 'float' lists in `vectors`, or 'base64' strings in `vectors_base64` (each the "
        "little-endian float32 bytes of one vector: ~4x smaller, far cheaper to store and "
        "parse).")
    token_counts: list[int | None] | None = Field(
        None, description="Per text, its exact token count from LM Studio's countTokens for "
        "this model, where the producer has it (the corpus chunker counts long chunks): the "
        "worker checks the context with it instead of counting the text again, and returns "
        "it as exact. null: the worker decides as usual.")

    @model_validator(mode="after")
    def _no_empty_texts(self) -> EmbeddingJob:
        empty = [i for i, text in enumerate(self.texts) if not text.strip()]
        if empty:
            raise ValueError(f"texts at positions {empty[:10]} are empty")
        if self.token_counts is not None and len(self.token_counts) != len(self.texts):
            raise ValueError(f"{len(self.token_counts)} token_counts for {len(self.texts)} texts")
        return self


Job = ChatJob | CompletionJob | EmbeddingJob

TASK_FOR_KIND = {"chat": TASK_CHAT, "completion": TASK_COMPLETE, "embedding": TASK_EMBED}
JOB_FOR_TASK: dict[str, type[_JobBase]] = {
    TASK_CHAT: ChatJob,
    TASK_COMPLETE: CompletionJob,
    TASK_EMBED: EmbeddingJob,
}


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


class PredictionStats(_Contract):
    """Every stat LM Studio returns with a prediction (names in snake_case)."""

    stop_reason: str
    tokens_per_second: float | None = None
    time_to_first_token_s: float | None = None
    prompt_tokens_count: int | None = None
    predicted_tokens_count: int | None = None
    total_tokens_count: int | None = None
    num_gpu_layers: float | None = None
    used_draft_model_key: str | None = None
    total_draft_tokens_count: int | None = None
    accepted_draft_tokens_count: int | None = None
    rejected_draft_tokens_count: int | None = None
    ignored_draft_tokens_count: int | None = None


class ModelIdentity(_Contract):
    model_key: str
    identifier: str | None = None
    display_name: str | None = None
    architecture: str | None = None
    format: str | None = None
    path: str | None = None
    size_bytes: int | None = None
    context_length: int | None = None
    max_context_length: int | None = None
    vision: bool | None = None
    trained_for_tool_use: bool | None = None
    # The instance's load config as LM Studio reported it (the SDK's camelCase keys).
    load_config: dict[str, Any] | None = None


class JobTiming(_Contract):
    enqueued_at: float | None = None
    started_at: float
    finished_at: float
    queue_wait_s: float | None = None
    run_s: float


class ToolCallFunction(_Contract):
    name: str
    arguments: str = Field(description="The arguments as a JSON string (OpenAI format).")


class ToolCall(_Contract):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class _ResultBase(_Contract):
    job_id: str
    model: ModelIdentity
    timing: JobTiming
    worker: str
    attempt: int = 1
    cancelled: bool = False


class ChatResult(_ResultBase):
    kind: Literal["chat"] = "chat"
    content: str
    parsed: Any = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    stats: PredictionStats


class CompletionResult(_ResultBase):
    kind: Literal["completion"] = "completion"
    content: str
    parsed: Any = None
    stats: PredictionStats


class EmbeddingResult(_ResultBase):
    kind: Literal["embedding"] = "embedding"
    vectors: list[list[float]] = Field(description="One float list per text (empty when "
                                       "the job asked for encoding_format='base64').")
    vectors_base64: list[str] = Field(
        default_factory=list, description="encoding_format='base64': one string per text, "
        "the base64 of the vector's little-endian float32 values.")
    dimension: int
    token_counts: list[int] = Field(description="Tokens per text: LM Studio's exact count, or "
                                    "an upper bound when token_counts_exact is False.")
    total_tokens: int
    completed: int = Field(description="Texts embedded (fewer than sent if cancelled).")
    token_counts_exact: bool = Field(True, description="False: some token_counts are local "
                                     "upper bounds (the job set exact_token_counts=False).")


Result = ChatResult | CompletionResult | EmbeddingResult

RESULT_FOR_KIND: dict[str, type[_ResultBase]] = {
    "chat": ChatResult,
    "completion": CompletionResult,
    "embedding": EmbeddingResult,
}


def parse_result(data: dict[str, Any]) -> _ResultBase:
    """Rebuild a result dict (as stored by the backend) into its contract class."""
    kind = data.get("kind")
    if kind not in RESULT_FOR_KIND:
        raise ValueError(f"not a job result: kind={kind!r}")
    return RESULT_FOR_KIND[kind].model_validate(data)


class JobProgress(_Contract):
    """The meta of the PROGRESS state while a job runs."""

    phase: Literal["admission", "prefill", "generating", "embedding"]
    prompt_progress: float = 0.0
    time_to_first_token_s: float | None = None
    tokens_so_far: int = 0
    items_done: int = 0
    items_total: int = 0
    worker: str | None = None
