"""Images in a chat history: only a vision model takes them, as in LM Studio."""

from __future__ import annotations

from typing import Any

from simulator.config import ModelConfig
from simulator.errors import SimError

NO_VISION_TITLE = "Model does not support images. Please use a model that does."


def image_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [part for message in messages for part in (message.get("content") or [])
            if isinstance(part, dict) and part.get("type") == "file"
            and part.get("fileType") == "image"]


def require_vision(model: ModelConfig, messages: list[dict[str, Any]]) -> None:
    """SimError (a channelError: the SDK's LMStudioServerError) for images to a text model."""
    if image_parts(messages) and not (model.type == "llm" and model.vision):
        raise SimError({"title": NO_VISION_TITLE})
