"""What an LM Studio host has: the greeting probe and model listings through the SDK.

Only the CLI (`lmq models`, `lmq doctor`, `lmq demo`) uses this; jobs never go through here.
The host is always passed explicitly (the SDK never probes port 1234 by itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

GREETING_TIMEOUT_S = 1.0


def lmstudio_answers(host: str, timeout_s: float = GREETING_TIMEOUT_S) -> bool:
    """True if GET /lmstudio-greeting answers like LM Studio ({"lmstudio": true})."""
    try:
        response = httpx.get(f"http://{host}/lmstudio-greeting", timeout=timeout_s)
        return response.status_code == 200 and bool(response.json().get("lmstudio"))
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


@dataclass(frozen=True)
class HostModel:
    key: str
    type: str  # "llm" or "embedding"
    loaded: bool
    size_bytes: int | None = None


def host_models(host: str) -> list[HostModel]:
    """Downloaded models of the host, each marked loaded or not."""
    import lmstudio as lms

    with lms.Client(host) as client:
        loaded = {model.identifier for model in client.list_loaded_models()}
        downloaded = client.list_downloaded_models()
    models = [HostModel(key=model.model_key, type=model.type, loaded=model.model_key in loaded,
                        size_bytes=getattr(model.info, "size_bytes", None))
              for model in downloaded]
    known = {model.key for model in models}
    models += [HostModel(key=identifier, type="?", loaded=True)
               for identifier in sorted(loaded - known)]
    return sorted(models, key=lambda model: (model.type, model.key))


def pick_models(models: list[HostModel]) -> tuple[str | None, str | None]:
    """A chat model and an embedding model, loaded ones first."""
    def first(kind: str) -> str | None:
        ranked = sorted((m for m in models if m.type == kind), key=lambda m: not m.loaded)
        return ranked[0].key if ranked else None

    return first("llm"), first("embedding")
