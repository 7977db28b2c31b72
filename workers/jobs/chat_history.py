"""Turn a ChatJob's messages into LM Studio's chat-history wire format (plain dicts).

Accepted inputs (see `ChatJob.messages`):

* a string: one user message;
* OpenAI-style messages: system / user / assistant (with optional `tool_calls`, whose
  `function.arguments` is a JSON string) / tool (`tool_call_id` + `content`); user content
  parts may be images: an `image_url` part with a data URL (kept as is, for the LM Studio
  boundary to upload: `workers.lmstudio.images`) or an SDK file handle (`type: file`);
* an SDK chat-history dict `{"messages": [...]}` in LM Studio's own format, passed through.

The output is `{"messages": [{"role": ..., "content": [parts...]}, ...]}` as described in
lmstudio-protocol.md §4.1; `workers.lmstudio.session` hands it to `lms.Chat.from_history`, which
validates it. Tools in OpenAI function format become the `rawTools` config value.
Nothing here imports the SDK: these are pure functions, unit-tested on their own.
"""

from __future__ import annotations

import json
from typing import Any

from workers.contract import ChatJob, ChatMessage, Tool
from workers.error import InvalidJobError

History = dict[str, Any]


def build_history(job: ChatJob) -> History:
    """The job's conversation as an LM Studio chat-history dict."""
    if isinstance(job.messages, dict):
        messages = list(job.messages["messages"])
        if job.system_prompt and not (messages and messages[0].get("role") == "system"):
            messages.insert(0, _system(job.system_prompt))
        return {"messages": messages}
    if isinstance(job.messages, str):
        messages = [_user_text(job.messages)]
    else:
        messages = [_convert(i, message) for i, message in enumerate(job.messages)]
    if job.system_prompt:
        messages.insert(0, _system(job.system_prompt))
    return {"messages": _merge_consecutive(messages)}


def raw_tools(tools: list[Tool] | None) -> dict[str, Any] | None:
    """OpenAI function tools as LM Studio's `rawTools` value (None when there are none)."""
    if not tools:
        return None
    converted = []
    for tool in tools:
        function = tool.function
        if function.parameters.get("type", "object") != "object":
            raise InvalidJobError(
                f"tool {function.name!r}: parameters must be a JSON Schema object "
                "({'type': 'object', 'properties': {...}})"
            )
        spec: dict[str, Any] = {"name": function.name, "parameters": function.parameters}
        if function.description:
            spec["description"] = function.description
        converted.append({"type": "function", "function": spec})
    return {"type": "toolArray", "tools": converted}


def tool_definitions(sdk_config: dict[str, Any]) -> list[dict[str, Any]]:
    """The tools a prediction sends, as applyPromptTemplate's `toolDefinitions` (to count
    prompt tokens). Read from the checked SDK config's `rawTools`, not the job's tools: a
    forced tool choice (the gateway's `required`, a named function) arrives as the job's
    `config.rawTools`, and its tools take prompt tokens all the same."""
    setting = sdk_config.get("rawTools") or {}
    tools = setting.get("tools") if setting.get("type") == "toolArray" else None
    return list(tools or [])


def prompt_chars(history: History) -> int:
    """Characters of text in a history (for the max_prompt_chars limit)."""
    total = 0
    for message in history["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
            continue
        for part in content or []:
            if isinstance(part, dict):
                total += len(str(part.get("text") or part.get("content") or ""))
    return total


# --------------------------------------------------------------------------------------


def _system(text: str) -> dict[str, Any]:
    return {"role": "system", "content": [{"type": "text", "text": text}]}


def _user_text(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def _convert(index: int, message: ChatMessage) -> dict[str, Any]:
    where = f"messages[{index}] ({message.role})"
    if message.role == "tool":
        if not message.tool_call_id:
            raise InvalidJobError(f"{where}: a tool message needs 'tool_call_id'")
        part = {"type": "toolCallResult", "toolCallId": message.tool_call_id,
                "content": _text_of(where, message.content)}
        return {"role": "tool", "content": [part]}
    if message.role == "user" and isinstance(message.content, list):
        return {"role": "user", "content": _user_parts(where, message.content)}
    text = _text_of(where, message.content)
    if message.role == "assistant":
        calls = [_tool_call_part(where, call) for call in message.tool_calls or []]
        return {"role": "assistant", "content": [{"type": "text", "text": text}, *calls]}
    if message.tool_calls:
        raise InvalidJobError(f"{where}: only assistant messages may carry 'tool_calls'")
    if not text and message.role == "user":
        raise InvalidJobError(f"{where}: empty user message")
    return {"role": message.role, "content": [{"type": "text", "text": text}]}


def _user_parts(where: str, content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for number, part in enumerate(content):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            if parts and parts[-1]["type"] == "text":  # one text between images, as before
                parts[-1] = {"type": "text", "text": parts[-1]["text"] + part["text"]}
            else:
                parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url" and str((part.get("image_url") or {}).get("url", "")
                                         ).startswith("data:"):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]["url"]}})
        elif kind == "file":
            parts.append(part)  # an SDK file handle: LM Studio already has the file
        else:
            raise InvalidJobError(
                f"{where}.content[{number}]: a user content part is text, an image_url with "
                f"a data URL, or an SDK file handle (got type {kind!r})")
    if not parts:
        raise InvalidJobError(f"{where}: empty user message")
    return parts


def _text_of(where: str, content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidJobError(
                f"{where}: only text content parts are supported here "
                f"(got type {part.get('type')!r}); images go in user messages"
            )
        texts.append(part["text"])
    return "".join(texts)


def _tool_call_part(where: str, call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if call.get("type", "function") != "function" or not isinstance(function, dict):
        raise InvalidJobError(
            f"{where}: tool_calls entries must look like "
            "{'id': ..., 'type': 'function', 'function': {'name': ..., 'arguments': '{...}'}}"
        )
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidJobError(f"{where}: a tool call needs function.name")
    request: dict[str, Any] = {"type": "function", "name": name,
                               "arguments": _arguments(where, name, function.get("arguments"))}
    if call.get("id"):
        request["id"] = str(call["id"])
    return {"type": "toolCallRequest", "toolCallRequest": request}


def _arguments(where: str, name: str, raw: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError as exc:
        raise InvalidJobError(
            f"{where}: arguments of tool call {name!r} are not valid JSON ({exc.msg})"
        ) from None
    if not isinstance(value, dict):
        raise InvalidJobError(f"{where}: arguments of tool call {name!r} must be a JSON object")
    return value


def _merge_consecutive(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LM Studio rejects consecutive system or assistant messages; merge what is safe."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        previous = merged[-1] if merged else None
        if previous and previous["role"] == message["role"] == "system":
            joined = previous["content"][0]["text"] + "\n\n" + message["content"][0]["text"]
            previous["content"] = [{"type": "text", "text": joined}]
        elif previous and previous["role"] == message["role"] == "user":
            previous["content"] = previous["content"] + message["content"]
        elif previous and previous["role"] == message["role"] == "assistant":
            raise InvalidJobError(
                "two consecutive assistant messages: merge them into one "
                "(LM Studio accepts one assistant turn between other turns)"
            )
        else:
            merged.append(message)
    return merged
