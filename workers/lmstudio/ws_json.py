"""LM Studio's websocket messages decoded by msgspec rather than the `json` module.

The SDK's websocket library (httpx_ws) decodes every message LM Studio sends with
`json.loads`. An embedding arrives as a JSON list of floats: a 768-dimension one costs
~150 us of CPU to decode that way here, ~22 us with msgspec's decoder (msgspec is already
a dependency, the SDK's own). At the corpus stress timing that decode was a quarter of an
embedding worker's CPU (ops/profile-worker-stress.md).

The same values come out (msgspec parses floats correctly rounded, as `json` does). What
msgspec refuses and `json` accepts (`NaN`, `Infinity`, a number beyond a double's range)
goes to `json.loads`, which also raises the same errors as before for a malformed message.
Sending is unchanged (`json.dumps`).

`install()` is called by the worker before it connects; it changes nothing if httpx_ws no
longer decodes through a module-level `json` (a later release), so the worker stays correct,
only slower.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

_decode = msgspec.json.Decoder().decode


class MsgspecJson:
    """What httpx_ws calls `json` once installed: msgspec's decoder, json's encoder."""

    dumps = staticmethod(json.dumps)

    @staticmethod
    def loads(data: str | bytes) -> Any:
        try:
            return _decode(data)
        except msgspec.MsgspecError:  # beyond strict JSON, or malformed: json decides
            return json.loads(data)


def install() -> bool:
    """Have httpx_ws decode with `MsgspecJson` (for this process); True if it does."""
    try:
        from httpx_ws import _api
    except ImportError:
        return False
    current = getattr(_api, "json", None)
    if current is json:
        setattr(_api, "json", MsgspecJson)  # noqa: B010 - a module's global, typed as a module
        return True
    return current is MsgspecJson
