"""OpenAI Batch API input lines -> our jobs, with one readable error per bad line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from producers.job_building import readable
from producers.prediction_config import checked_config
from workers.contract import ChatJob, CompletionJob, EmbeddingJob, Job, PredictionConfig
from workers.error import InvalidJobError

URL_KIND = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
}
# Body fields that have no LM Studio equivalent and are accepted without effect.
IGNORED_FIELDS = frozenset({
    "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "user",
    "tool_choice", "parallel_tool_calls", "metadata", "store", "service_tier", "n", "stream",
    "encoding_format", "dimensions", "stream_options", "modalities", "reasoning_effort",
})


class LineError(ValueError):
    """One bad line; the message names the field and what to fix."""


@dataclass(frozen=True)
class BatchRequest:
    line: int
    custom_id: str
    url: str
    job: Job


def parse_line(text: str, line: int, model_map: dict[str, str]) -> BatchRequest:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise LineError("each line must be a JSON object")
    custom_id = record.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError("custom_id must be a non-empty string")
    if record.get("method", "POST") != "POST":
        raise LineError(f"method must be POST, not {record.get('method')!r}")
    url = record.get("url")
    if url not in URL_KIND:
        raise LineError(f"url must be one of {', '.join(URL_KIND)}, not {url!r}")
    body = record.get("body")
    if not isinstance(body, dict):
        raise LineError("body must be a JSON object")
    return BatchRequest(line, custom_id, url, _job(URL_KIND[url], body, model_map))


def _job(kind: str, body: dict[str, Any], model_map: dict[str, str]) -> Job:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise LineError("body.model must be a non-empty string")
    if body.get("stream"):
        raise LineError("body.stream must be false: batch requests are not streamed")
    if body.get("n", 1) != 1:
        raise LineError("body.n must be 1 (one choice per request)")
    target = model_map.get(model, model)
    try:
        if kind == "embedding":
            return EmbeddingJob.model_validate(
                {"model": target, "texts": _embedding_input(body.get("input"))})
        config = _config(body)
        if kind == "completion":
            return CompletionJob.model_validate(
                {"model": target, "prompt": _prompt(body.get("prompt")), "config": config})
        return ChatJob.model_validate({"model": target, "messages": _messages(body.get("messages")),
                                       "tools": body.get("tools"), "config": config})
    except ValidationError as exc:
        raise LineError(readable(exc, f"{kind} request").replace("invalid ", "", 1)) from None


def _embedding_input(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise LineError("body.input must be a string or a non-empty list of strings "
                    "(token arrays are not supported)")


def _prompt(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value:
        raise LineError("body.prompt must be a non-empty string (or a list of one)")
    return value


def _messages(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise LineError("body.messages must be a non-empty list of messages")
    return value


def _config(body: dict[str, Any]) -> PredictionConfig:
    stop = body.get("stop")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    try:  # the SDK's schema decides, as for every job (producers.prediction_config)
        return checked_config({
            "temperature": body.get("temperature"), "max_tokens": max_tokens,
            "top_p": body.get("top_p"), "stop": [stop] if isinstance(stop, str) else stop,
            "seed": body.get("seed"), "json_schema": _schema(body.get("response_format"))})
    except InvalidJobError as exc:
        raise LineError(f"body: {exc}") from None


def _schema(response_format: Any) -> dict[str, Any] | None:
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return schema
        raise LineError("body.response_format.json_schema.schema must be a JSON Schema object")
    raise LineError("body.response_format.type must be text, json_object or json_schema")
