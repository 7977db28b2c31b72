"""The no-key gateway's Host check: which names count as loopback ones."""

from __future__ import annotations

import pytest

from producers.gateway.host_guard import host_name, is_loopback_host


@pytest.mark.parametrize(("header", "name"), [
    ("127.0.0.1:8000", "127.0.0.1"), ("LOCALHOST:8000", "localhost"), ("localhost", "localhost"),
    ("[::1]:8000", "[::1]"), ("evil.test:8000", "evil.test"), ("", ""),
    ("127.0.0.1.evil.test", "127.0.0.1.evil.test"),
])
def test_host_name_drops_the_port(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(("name", "passes"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("[::1]", True),
    ("evil.test", False), ("127.0.0.1.evil.test", False), ("10.0.0.1", False), ("[::2]", False),
    ("", False), ("localhost.evil.test", False),
])
def test_only_loopback_names_pass(name: str, passes: bool) -> None:
    assert is_loopback_host(name) is passes
