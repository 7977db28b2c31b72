"""Reading LM Studio KV config stacks ({"layers": [{"layerName", "config": {"fields"}}]})."""

from __future__ import annotations

from typing import Any

_MISSING = object()


def stack_fields(stack: dict[str, Any] | None) -> dict[str, Any]:
    """Flatten a KvConfigStack; later layers override earlier ones."""
    merged: dict[str, Any] = {}
    for layer in (stack or {}).get("layers", []):
        for field in layer.get("config", {}).get("fields", []):
            merged[field["key"]] = field.get("value")
    return merged


def layer_names(stack: dict[str, Any] | None) -> list[str]:
    return [layer.get("layerName", "") for layer in (stack or {}).get("layers", [])]


def checkbox(value: Any, default: Any = None) -> Any:
    """Unwrap {"checked": bool, "value": x}; unchecked or false-valued gives default."""
    if isinstance(value, dict) and "checked" in value:
        if not value.get("checked") or value.get("value") is False:
            return default
        return value.get("value", default)
    return default if value is None else value


def kv(fields: dict[str, Any]) -> dict[str, Any]:
    return {"fields": [{"key": k, "value": v} for k, v in fields.items()]}
