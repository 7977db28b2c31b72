"""Images in a chat: refused at once for a model without vision, else uploaded to LM Studio.

A chat history from `workers.jobs.chat_history` may carry two kinds of image parts:
`image_url` parts with a data URL (the producer read the file), which are uploaded here
with the SDK's `prepare_image` (LM Studio's `files.uploadFileBase64`) and replaced by the
file handle it returns; and SDK file handles (`type: file`) that a producer prepared with
`lms.prepare_image` against the same LM Studio, passed through. LM Studio lists whether a
model takes images (`vision`); a job with images for one that does not is a bad job, said
before it waits for admission rather than after a prediction fails.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from typing import Any

from workers.error import InvalidJobError
from workers.lmstudio.session import Session

History = dict[str, Any]  # LM Studio's chat-history wire format
IMAGE_PART_TYPES = ("image_url", "file")  # an image to upload; an uploaded file handle


def has_images(history: History) -> bool:
    """Does any message carry an image (an image_url part or an SDK file handle)?"""
    return any(isinstance(part, dict) and part.get("type") in IMAGE_PART_TYPES
               for message in history["messages"]
               for part in (message.get("content") if isinstance(message.get("content"), list)
                            else []))


def with_uploaded_images(session: Session, history: History) -> History:
    """`history` with its data-URL images uploaded; InvalidJobError without vision."""
    if not has_images(history):
        return history
    if not session.takes_images():
        key = session.model.key if session.model else "this model"
        raise InvalidJobError(
            f"the chat has images but {key} has no vision (LM Studio lists it without image "
            "input): send it to a vision model's queue, or leave the images out")
    messages = []
    for message in history["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            message = {**message, "content": [_uploaded(session, part) for part in content]}
        messages.append(message)
    return {**history, "messages": messages}


def _uploaded(session: Session, part: Any) -> Any:
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return part
    data, mime = _decoded(part["image_url"]["url"])
    extension = mimetypes.guess_extension(mime) or ""
    return session.prepare_image(data, f"image{extension}")


def _decoded(url: str) -> tuple[bytes, str]:
    """The bytes and media type of a base64 data URL."""
    header, _, payload = url.partition(",")
    mime = header.removeprefix("data:").split(";")[0] or "application/octet-stream"
    if not header.endswith(";base64"):
        raise InvalidJobError("an image data URL must be base64 (data:image/png;base64,...)")
    try:
        return base64.b64decode(payload, validate=True), mime
    except (binascii.Error, ValueError):
        raise InvalidJobError("an image data URL carries invalid base64") from None
