"""The SDK's own result types, built from the pool's results (`workers.contract`).

`model_info` is an `LlmInfo` from the result's model identity (what LM Studio reported to
the worker; a job cancelled before it started has only the model key, and the rest is then
empty or False), `load_config` is the instance's load config as LM Studio reported it, and
`prediction_config` is the config the caller sent. Fragments are the pool's text pieces:
a worker batches what arrives within 50 ms into one piece, so there may be fewer fragments
than tokens, and their `tokens_count` is 0 (the stream does not carry it); joined, they are
the content.
"""

from __future__ import annotations

import json
from typing import Any, get_args

import lmstudio as lms
from lmstudio._sdk_models import ModelCompatibilityType

from workers.contract import (
    ChatResult,
    CompletionResult,
    ModelIdentity,
    PredictionStats,
    ToolCall,
    parse_result,
)

PoolResult = ChatResult | CompletionResult


def fragment(text: str) -> lms.LlmPredictionFragment:
    return lms.LlmPredictionFragment(content=text, tokens_count=0, contains_drafted=False,
                                     reasoning_type="none")


def prediction_result(result: PoolResult, config: lms.LlmPredictionConfig
                      ) -> lms.PredictionResult:
    return lms.PredictionResult(
        content=result.content, parsed=_parsed(result, config), stats=stats(result.stats),
        model_info=model_info(result.model), load_config=load_config(result.model),
        prediction_config=config)


def cancelled_result(model_key: str, partial: dict[str, Any] | None,
                     config: lms.LlmPredictionConfig) -> lms.PredictionResult:
    """A cancelled job: its partial result, or an empty one when it never started."""
    if partial is not None:
        found = parse_result(partial)
        assert isinstance(found, ChatResult | CompletionResult)
        return prediction_result(found, config)
    identity = ModelIdentity(model_key=model_key)
    return lms.PredictionResult(
        content="", parsed="", stats=lms.LlmPredictionStats(stop_reason="userStopped"),
        model_info=model_info(identity), load_config=load_config(identity),
        prediction_config=config)


def stats(pool_stats: PredictionStats) -> lms.LlmPredictionStats:
    fields = pool_stats.model_dump(exclude_none=True)
    if "time_to_first_token_s" in fields:  # the pool names units `_s`, the SDK `_sec`
        fields["time_to_first_token_sec"] = fields.pop("time_to_first_token_s")
    return lms.LlmPredictionStats(**fields)


def model_info(identity: ModelIdentity) -> lms.LlmInfo:
    return lms.LlmInfo(
        model_key=identity.model_key, format=_format(identity.format),
        display_name=identity.display_name or identity.model_key, path=identity.path or "",
        size_bytes=identity.size_bytes or 0, vision=bool(identity.vision),
        trained_for_tool_use=bool(identity.trained_for_tool_use),
        max_context_length=identity.max_context_length or identity.context_length or 0,
        architecture=identity.architecture)


def _format(name: str | None) -> Any:
    """LM Studio's format name; the SDK's type lists the known ones (gguf when unknown)."""
    return name if name in get_args(ModelCompatibilityType) else "gguf"


def load_config(identity: ModelIdentity) -> lms.LlmLoadModelConfig:
    if identity.load_config:
        return lms.LlmLoadModelConfig.from_dict(identity.load_config)
    return lms.LlmLoadModelConfig(context_length=identity.context_length)


def tool_call_requests(calls: list[ToolCall]) -> list[lms.ToolCallRequest]:
    """The pool's OpenAI-style tool calls as the SDK's requests (arguments parsed)."""
    return [lms.ToolCallRequest(type="function", id=call.id, name=call.function.name,
                                arguments=json.loads(call.function.arguments or "{}"))
            for call in calls]


def _parsed(result: PoolResult, config: lms.LlmPredictionConfig) -> Any:
    """The SDK's rule: a dict for a structured prediction whose text is a JSON object, else
    the content itself (the *same* object: `PredictionResult.structured` tests identity)."""
    if config.structured is None or result.cancelled:
        return result.content
    parsed = result.parsed
    if parsed is None:
        try:
            parsed = json.loads(result.content)
        except json.JSONDecodeError:
            return result.content
    return parsed if isinstance(parsed, dict) else result.content
