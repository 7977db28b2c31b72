"""OpenAI-style messages <-> LM Studio chat history, and replies as openai messages.

Pure data conversion: no OpenManus, no SDK connection. LM Studio's history wants one system
message first, text parts for users, assistant turns as a text part followed by
`toolCallRequest` parts (arguments as an object), and tool results as `toolCallResult` parts;
consecutive user or tool turns are merged (LM Studio does the same for users).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openai.types.chat import ChatCompletionMessage

from workers.contract import PredictionStats

ImageUploader = Callable[[str], dict[str, Any]]  # image URL / data URL -> history file part


@dataclass
class Reply:
    """What one prediction produced, whichever way it ran."""

    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI format
    stats: PredictionStats | None = None
    job_id: str | None = None
    model: str | None = None


def split_system(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """All system texts joined (LM Studio takes one system prompt) and the other messages."""
    texts = [text_of(m.get("content")) for m in messages if m.get("role") == "system"]
    rest = [m for m in messages if m.get("role") != "system"]
    joined = "\n\n".join(t for t in texts if t)
    return (joined or None), rest


def text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict)
                   and p.get("type") == "text")


def to_history(messages: list[dict[str, Any]],
               upload: ImageUploader | None = None) -> dict[str, Any]:
    """OpenAI-style messages as an LM Studio chat-history dict."""
    system, rest = split_system(messages)
    turns: list[dict[str, Any]] = []
    if system:
        turns.append({"role": "system", "content": [{"type": "text", "text": system}]})
    for message in rest:
        role = message.get("role")
        parts = _PARTS[role](message, upload) if role in _PARTS else None
        if parts is None:
            raise ValueError(f"Invalid role: {role!r}")
        if turns and role in ("user", "tool") and turns[-1]["role"] == role:
            turns[-1]["content"].extend(parts)
        else:
            turns.append({"role": role, "content": parts})
    return {"messages": turns}


def _user_parts(message: dict[str, Any], upload: ImageUploader | None) -> list[dict[str, Any]]:
    content = message.get("content")
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content or ""}]
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
        elif part.get("type") == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            if upload is None:
                raise ValueError("images need a provider that can upload them to LM Studio")
            parts.append(upload(_image_url(part)))
    return parts or [{"type": "text", "text": ""}]


def _image_url(part: dict[str, Any]) -> str:
    image = part.get("image_url")
    return str(image.get("url") if isinstance(image, dict) else image)


def _assistant_parts(message: dict[str, Any], _: ImageUploader | None) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text_of(message.get("content"))}]
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        parts.append({"type": "toolCallRequest", "toolCallRequest": {
            "type": "function", "id": call.get("id") or new_call_id(),
            "name": function.get("name", ""), "arguments": _arguments(function.get("arguments")),
        }})
    return parts


def _tool_parts(message: dict[str, Any], _: ImageUploader | None) -> list[dict[str, Any]]:
    return [{"type": "toolCallResult", "content": text_of(message.get("content")),
             "toolCallId": message.get("tool_call_id") or ""}]


_PARTS = {"user": _user_parts, "assistant": _assistant_parts, "tool": _tool_parts}


def _arguments(raw: Any) -> dict[str, Any]:
    """A JSON-string argument list as an object (what LM Studio's history requires)."""
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {"_raw_arguments": str(raw)}  # keep what the model said; tools will reject it
    return value if isinstance(value, dict) else {"value": value}


def job_safe_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages a chat job accepts: tool-call arguments as JSON objects (a model's garbled
    arguments would make the whole job invalid), and no images (jobs carry text only)."""
    safe = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") != "text"
                                             for p in content):
            raise ValueError("images cannot go through the job queue (jobs carry text only): "
                             "use LMStudioProvider for ask_with_images")
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [_job_safe_call(c) for c in calls]}
        safe.append(message)
    return safe


def _job_safe_call(call: dict[str, Any]) -> dict[str, Any]:
    function = dict(call.get("function") or {})
    function["arguments"] = json.dumps(_arguments(function.get("arguments")))
    return {**call, "type": "function", "function": function}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def openai_tool_call(call_id: str | None, name: str, arguments: Any) -> dict[str, Any]:
    """One OpenAI tool call; arguments become a JSON string."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return {"id": call_id or new_call_id(), "type": "function",
            "function": {"name": name, "arguments": text}}


def raw_tools(tools: list[dict[str, Any]], *, force: bool = False) -> dict[str, Any]:
    """OpenAI function tools as LM Studio's `rawTools` setting (toolArray)."""
    array: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, dict) or "type" not in tool:
            raise ValueError("Each tool must be a dict with 'type' field")
        function = dict(tool.get("function") or {})
        function["parameters"] = function.get("parameters") or {"type": "object",
                                                                  "properties": {}}
        array.append({"type": "function", "function": function})
    setting: dict[str, Any] = {"type": "toolArray", "tools": array}
    if force:
        setting["force"] = True
    return setting


def completion_message(reply: Reply) -> ChatCompletionMessage:
    """The reply as the openai `ChatCompletionMessage` OpenManus' agents read."""
    payload: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        payload["tool_calls"] = reply.tool_calls
    return ChatCompletionMessage.model_validate(payload)
