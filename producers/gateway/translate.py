"""OpenAI request bodies -> the pool's jobs, through the same checks as `lmq batch` lines.

A body is validated by `producers.batch.parse_line` (what `lmq batch` and /v1/files use for
every line), so a request is accepted over HTTP exactly when it would be accepted in a batch
file. Before that, what only a live HTTP request has is taken off or checked here:

* `stream` / `stream_options` (the route streams; a batch line may not);
* image parts: data URLs (http(s) links were downloaded into data URLs before: see
  `image_links`). The gateway never reads a path from its own disk for a remote caller
  (chat_input would read a path: right for a local script, a file disclosure for a server);
* `tool_choice` (batch lines ignore it): applied to the parsed job by `tool_choice`, onto
  LM Studio's own tool-use setting (`force` for required and named functions);
* role "developer" (newer OpenAI clients' name for system) becomes "system".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from producers.batch import LineError, parse_line
from producers.chat_input import chat_messages
from producers.gateway import tool_choice
from producers.gateway.errors import bad_request
from workers.contract import ChatJob, EmbeddingJob, Job
from workers.error import InvalidJobError


@dataclass(frozen=True)
class Request:
    job: Job
    stream: bool = False
    include_usage: bool = False


def job_request(url: str, body: dict[str, Any]) -> Request:
    """The job a request body asks for; ApiError 400 saying what is wrong."""
    body = dict(body)
    stream = bool(body.pop("stream", False))
    options = body.pop("stream_options", None) or {}
    include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
    if url == "/v1/embeddings" and stream:
        raise bad_request("embeddings are not streamed: leave stream unset", "stream")
    choice = body.pop("tool_choice", None)
    if url == "/v1/chat/completions":
        body = _chat_body(body)
    try:
        job = parse_body(url, body)
    except LineError as exc:
        raise bad_request(str(exc)) from None
    if isinstance(job, ChatJob):
        job = tool_choice.apply(job, choice)
    elif choice is not None:
        raise bad_request("tool_choice is for chat completions", "tool_choice")
    if isinstance(job, EmbeddingJob):
        job = job.model_copy(update={"encoding_format": _encoding(body)})
    return Request(job, stream, include_usage)


def parse_body(url: str, body: dict[str, Any]) -> Job:
    """`body` as one line of a batch file (LineError saying what is wrong)."""
    record = {"custom_id": "request", "method": "POST", "url": url, "body": body}
    return parse_line(json.dumps(record), 1, {}).job


def _encoding(body: dict[str, Any]) -> str:
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request("encoding_format must be float or base64", "encoding_format")
    return str(encoding)


def _chat_body(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages")
    if isinstance(messages, list):
        body["messages"] = _messages(messages)
    return body


def _messages(messages: list[Any]) -> Any:
    fixed = []
    for index, message in enumerate(messages):
        if isinstance(message, dict):
            if message.get("role") == "developer":
                message = {**message, "role": "system"}
            _check_images(index, message.get("content"))
        fixed.append(message)
    try:
        return chat_messages(fixed)
    except InvalidJobError as exc:
        raise bad_request(str(exc), "messages") from None


def _check_images(index: int, content: Any) -> None:
    if not isinstance(content, list):
        return
    for number, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "image_url":
            continue
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str) or not url.startswith("data:"):
            raise bad_request(f"messages[{index}].content[{number}]: the gateway takes images "
                              "as data URLs (data:image/png;base64,...) or http(s) URLs, "
                              "not file paths", "messages")
