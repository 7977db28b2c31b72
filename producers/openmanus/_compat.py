"""The OpenManus pieces the adapter builds on, across versions.

Supported: the newest upstream `app.llm.LLM` (HEAD, stable since 2025-04) and the PyPI
`openmanus==0.1.0` wheel (the day-one prototype). Differences handled here:

* `app.exceptions.TokenLimitExceeded` exists only upstream. On 0.1.0 we define a stand-in with
  the same name and publish it as `app.exceptions.TokenLimitExceeded`, so programs written for
  newer OpenManus can import it from the usual place.
* `LLM.format_messages` takes `supports_images` only upstream; `Message.base64_image` is
  upstream-only too.
* `ToolChoice` is an enum upstream and a plain string in 0.1.0.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["LLM", "UPSTREAM_HEAD", "Message", "TokenLimitExceeded", "choice_value",
           "format_messages"]

try:
    import app.exceptions as _om_exceptions
    from app.llm import LLM
    from app.schema import Message
except ImportError as exc:  # pragma: no cover - exercised by the "not installed" path
    raise ImportError(
        "producers.openmanus needs OpenManus importable as the `app` package: run ops/setup "
        "(installs openmanus==0.1.0 via ops/setup.d/openmanus) or put an OpenManus checkout "
        f"on sys.path ({exc})"
    ) from exc


class _TokenLimitExceededStandIn(Exception):  # noqa: N818 - upstream's name, kept on purpose
    """Stand-in for upstream `app.exceptions.TokenLimitExceeded` (absent in openmanus 0.1.0)."""


if hasattr(_om_exceptions, "TokenLimitExceeded"):
    TokenLimitExceeded: type[Exception] = _om_exceptions.TokenLimitExceeded
else:
    _TokenLimitExceededStandIn.__name__ = "TokenLimitExceeded"
    _TokenLimitExceededStandIn.__qualname__ = "TokenLimitExceeded"
    TokenLimitExceeded = _TokenLimitExceededStandIn
    _om_exceptions.TokenLimitExceeded = TokenLimitExceeded

_FORMAT_TAKES_IMAGES = "supports_images" in inspect.signature(LLM.format_messages).parameters
UPSTREAM_HEAD = _FORMAT_TAKES_IMAGES  # a cheap, reliable marker of post-0.1.0 OpenManus


def format_messages(messages: list[Any] | None, *, keep_images: bool) -> list[dict[str, Any]]:
    """OpenManus `Message`s / dicts as OpenAI-style dicts (upstream's own formatter)."""
    if not messages:
        return []
    prepared = [_copy(m) for m in messages]
    if _FORMAT_TAKES_IMAGES:
        return list(LLM.format_messages(prepared, supports_images=keep_images))
    return list(LLM.format_messages(prepared))


def _copy(message: Any) -> Any:
    # upstream's formatter mutates dicts in place (it deletes base64_image): work on copies
    if isinstance(message, Message):
        return message.to_dict()
    return dict(message) if isinstance(message, dict) else message


def choice_value(tool_choice: Any) -> str:
    """'none' / 'auto' / 'required' from a string or upstream's ToolChoice enum."""
    value = str(getattr(tool_choice, "value", tool_choice))
    if value not in ("none", "auto", "required"):
        raise ValueError(f"Invalid tool_choice: {tool_choice!r}")
    return value
