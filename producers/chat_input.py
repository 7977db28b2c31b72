"""Chat input as the `lmstudio` SDK takes it, turned into the plain JSON a ChatJob carries.

Accepted (what `respond()` accepts, plus OpenAI-style messages):

* a string: one user message;
* an `lms.Chat`, or the SDK's `ChatHistoryData`: its history dict, file handles included;
* a chat-history dict (`{"messages": [...]}`, the data `Chat.from_history` takes): checked
  by `Chat.from_history` itself, then sent in the SDK's own wire form;
* OpenAI-style messages: a list of `{"role", "content"}` dicts, where user content parts
  may be images: `{"type": "image_url", "image_url": {"url": ...}}` with a data URL or a
  path of a file on this machine (read here, sent as a data URL: the worker may run
  elsewhere), or an SDK file handle (`lms.prepare_image(...)`, a `FileHandle` or its dict).

The worker uploads data-URL images to its LM Studio and refuses images for a model
without vision (`workers.lmstudio.images`).
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import lmstudio as lms
import msgspec
from lmstudio import FileHandle
from lmstudio.history import ChatHistoryData

from workers.error import InvalidJobError

ChatInput = str | lms.Chat | ChatHistoryData | Mapping[str, Any] | Sequence[Mapping[str, Any]]


def chat_messages(value: Any) -> Any:
    """The JSON form of a chat input (see the module docstring); InvalidJobError if none."""
    if isinstance(value, str):
        return value
    if isinstance(value, lms.Chat):
        return value._get_history()  # the wire form `respond()` sends (SDK's own method)
    if isinstance(value, ChatHistoryData):
        return value.to_dict()
    if isinstance(value, Mapping):
        return _sdk_history(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_openai_message(index, message) for index, message in enumerate(value)]
    raise InvalidJobError(
        f"chat input is a string, an lmstudio.Chat, a chat-history dict ({{'messages': "
        f"[...]}}) or a list of OpenAI-style messages, not {type(value).__name__}")


def _sdk_history(history: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return dict(lms.Chat.from_history(dict(history))._get_history())  # type: ignore[arg-type]
    except (lms.LMStudioError, msgspec.ValidationError, ValueError, TypeError) as exc:
        raise InvalidJobError(f"chat history rejected by the SDK: {' '.join(str(exc).split())}"
                              ) from None


def _openai_message(index: int, message: Any) -> Any:
    if not isinstance(message, Mapping):
        return message  # the contract says what is wrong with it
    content = message.get("content")
    if not isinstance(content, list):
        return dict(message)
    where = f"messages[{index}]"
    parts = [_part(f"{where}.content[{number}]", part) for number, part in enumerate(content)]
    return {**message, "content": parts}


_PART_TYPES = ("text", "image_url", "file")


def _part(where: str, part: Any) -> Any:
    if isinstance(part, FileHandle):
        return part.to_dict()  # {"type": "file", "name", "identifier", "sizeBytes", ...}
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind not in _PART_TYPES:
        raise InvalidJobError(
            f"{where}: a content part is text ({{'type': 'text', 'text': ...}}), an image "
            "({'type': 'image_url', 'image_url': {'url': <data URL or file path>}}) or an "
            f"SDK file handle (lms.prepare_image), not {kind or type(part).__name__!r}")
    if kind != "image_url":
        return part
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str) or not url:
        raise InvalidJobError(f"{where}: an image_url part needs image_url.url (a data URL "
                              "or a file path)")
    return {"type": "image_url", "image_url": {"url": _data_url(where, url)}}


def _data_url(where: str, url: str) -> str:
    """A data URL as given; a file path (or file:// URL) read into one."""
    if url.startswith("data:"):
        return url
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        raise InvalidJobError(f"{where}: image URLs are not fetched: download the image and "
                              "give its file path or a data URL")
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else url).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidJobError(f"{where}: cannot read image file {str(path)!r}: "
                              f"{exc.strerror or exc}") from None
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
