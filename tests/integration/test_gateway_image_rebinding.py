"""DNS rebinding of image links: the gateway downloads from the address it checked.

A name is resolved by a stub of `socket.getaddrinfo` (what asyncio and httpx both call) that
answers differently the second time, as a rebinding DNS server does; the download is real
(httpx against a local HTTP server). 127.0.0.2 stands for a public address: the check is
told it is one, nothing listens there, so a connection to it fails at once, no network
needed, while 127.0.0.1 (the server) keeps counting as loopback.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from producers.gateway import image_links
from producers.gateway.errors import ApiError

PNG = b"\x89PNG\r\n\x1a\n" + b"rebinding-test-image"
NAME = "pics.rebind.test"
PUBLIC_STAND_IN = "127.0.0.2"


@pytest.fixture()
def server() -> Iterator[tuple[int, list[tuple[str, str | None]]]]:
    """A local image server on 127.0.0.1: (port, the (path, Host header) of each GET)."""
    seen: list[tuple[str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append((self.path, self.headers.get("Host")))
            if self.path == "/moved.png":
                self.send_response(302)
                self.send_header("Location", "/cat.png")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], seen
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`answers(first, later)`: NAME resolves to the addresses of `first` in turn (one per
    lookup), then to `later`; returns the list of answers given. PUBLIC_STAND_IN is taken
    for a public address by the check."""
    given: list[str] = []
    real_lookup, real_internal = socket.getaddrinfo, image_links._internal

    def answers(first: list[str], later: str) -> list[str]:
        def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host not in (NAME, NAME.encode()):
                return real_lookup(host, port, *args, **kwargs)
            given.append(first[len(given)] if len(given) < len(first) else later)
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                     (given[-1], int(port)))]

        monkeypatch.setattr(socket, "getaddrinfo", lookup)
        return given

    monkeypatch.setattr(image_links, "_internal",
                        lambda address: None if str(address) == PUBLIC_STAND_IN
                        else real_internal(address))
    return answers


def _inline(url: str) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]}

    async def run() -> dict[str, Any]:
        async with image_links.client() as http:
            return await image_links.inline_images(body, http, private_ok=False)

    return asyncio.run(run())


def test_a_name_rebound_to_loopback_after_the_check_is_not_fetched(server: Any,
                                                                  rebinding_dns: Any) -> None:
    """Checked: a public address; a second lookup would answer 127.0.0.1. The gateway
    connects to the checked address (nothing there: a 400), never to the loopback server."""
    port, seen = server
    given = rebinding_dns([PUBLIC_STAND_IN], "127.0.0.1")
    with pytest.raises(ApiError) as caught:
        _inline(f"http://{NAME}:{port}/cat.png")
    assert caught.value.status == 400
    assert "ConnectError" in caught.value.message, caught.value.message
    assert seen == []  # the loopback server was never reached
    assert given == [PUBLIC_STAND_IN]  # one lookup: the checked answer was the one used


def test_the_download_goes_to_the_checked_address_with_the_name_as_host(
        server: Any, rebinding_dns: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server stands at the checked address this time (127.0.0.1, taken for public);
    each hop's check gets it, any further lookup would answer 127.0.0.2, where nothing
    listens. Both hops (a redirect) are fetched from the address their own check returned,
    with the name in the Host header."""
    port, seen = server
    monkeypatch.setattr(image_links, "_internal", lambda address: None)
    given = rebinding_dns(["127.0.0.1", "127.0.0.1"], PUBLIC_STAND_IN)
    body = _inline(f"http://{NAME}:{port}/moved.png")
    url = body["messages"][0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert seen == [("/moved.png", f"{NAME}:{port}"), ("/cat.png", f"{NAME}:{port}")]
    assert given == ["127.0.0.1", "127.0.0.1"]  # one lookup per hop: its check
