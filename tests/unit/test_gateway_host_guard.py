"""The no-key gateway's Host check: which names count as loopback ones."""

from __future__ import annotations

import pytest

from producers.gateway.host_guard import LOOPBACK_NAMES, host_name


@pytest.mark.parametrize(("header", "name"), [
    ("127.0.0.1:8000", "127.0.0.1"), ("LOCALHOST:8000", "localhost"), ("localhost", "localhost"),
    ("[::1]:8000", "[::1]"), ("evil.test:8000", "evil.test"), ("", ""),
    ("127.0.0.1.evil.test", "127.0.0.1.evil.test"),
])
def test_host_name_drops_the_port(header: str, name: str) -> None:
    assert host_name(header) == name


def test_only_loopback_names_pass() -> None:
    assert {"127.0.0.1", "localhost"} == LOOPBACK_NAMES
