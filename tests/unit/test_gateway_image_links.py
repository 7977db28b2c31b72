"""The gateway's SSRF check of image links: which resolved addresses it refuses (IP
literals only, so no DNS and no network)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from producers.gateway.errors import ApiError
from producers.gateway.image_links import _check_public


@pytest.mark.parametrize(("host", "kind"), [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.9", "private"),
    ("169.254.169.254", "link-local"), ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"),
    ("[::1]", "loopback"), ("[fe80::1]", "link-local"), ("[::ffff:127.0.0.1]", "loopback"),
    ("100.64.0.1", "non-global"),
])
def test_internal_addresses_are_refused_naming_the_kind(host: str, kind: str) -> None:
    url = f"http://{host}/cat.png"
    with pytest.raises(ApiError) as caught:
        asyncio.run(_check_public("messages[0].content[1]", url, httpx.URL(url)))
    assert caught.value.status == 400
    assert f"a {kind} address" in caught.value.message, caught.value.message


@pytest.mark.parametrize("host", ["93.184.216.34", "[2606:4700::1111]"])
def test_public_addresses_pass(host: str) -> None:
    url = f"http://{host}/cat.png"
    asyncio.run(_check_public("messages[0].content[1]", url, httpx.URL(url)))
