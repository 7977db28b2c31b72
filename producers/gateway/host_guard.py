"""Without API keys, only requests addressed to the gateway by a loopback name.

With no LMQ_API_KEYS the gateway listens on 127.0.0.1 and asks no key, so a web page open
in a browser on the same machine could still reach it: its own domain re-resolved to
127.0.0.1 (DNS rebinding) makes the browser send that page's requests to the gateway as
same-origin ones. They carry the page's domain in their Host header, which the browser does
not let the page change, so the gateway then answers only a loopback Host: localhost or a
loopback address such as 127.0.0.1 or [::1] (with keys, a key is what lets a request in,
and any name may reach the gateway).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any


def host_name(header: str) -> str:
    """The Host header without its port, lower case ("[::1]:8000" -> "[::1]")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header.partition("]")[0] + "]"
    return header.rpartition(":")[0] if ":" in header else header


def is_loopback_host(name: str) -> bool:
    """localhost, or a loopback address literal ("127.0.0.1", "[::1]"); never a domain."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


class LoopbackHostOnly:
    """ASGI middleware: a 400 OpenAI error for an HTTP request whose Host is not a loopback
    name (lifespan and other scopes pass)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header = next((value.decode("latin-1") for name, value in scope["headers"]
                           if name == b"host"), "")
            if not is_loopback_host(host_name(header)):
                await _refuse(header, send)
                return
        await self.app(scope, receive, send)


async def _refuse(header: str, send: Any) -> None:
    message = (f"Host {header!r} refused: with no LMQ_API_KEYS the gateway answers requests "
               "to localhost or a loopback address only (a guard against DNS rebinding); "
               "use one of those, or set LMQ_API_KEYS to serve other names")
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                 "param": None, "code": "host_not_allowed"}}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
