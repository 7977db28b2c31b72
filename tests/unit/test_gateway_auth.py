"""The gateway's keys (LMQ_API_KEYS) and where it may listen: no network."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from producers.gateway.auth import LOCAL, KeyRing, Tenant, hash_key, parse_api_keys
from producers.gateway.server import listen_host
from workers.error import ConfigError
from workers.settings import Settings


def test_keys_are_kept_only_as_hashes_with_tenant_and_priority() -> None:
    hashed_b = hash_key("key-b")
    keys = parse_api_keys(f"key-a=team-a:high, {hashed_b}=team-b")
    assert keys == {hash_key("key-a"): Tenant("team-a", "high"),
                    hashed_b: Tenant("team-b", "normal")}
    assert "key-a" not in repr(keys)
    ring = KeyRing(keys)
    assert ring.tenant("Bearer key-a") == Tenant("team-a", "high")
    assert ring.tenant("bearer key-b") == Tenant("team-b", "normal")
    assert ring.tenant("Bearer key-c") is None and ring.tenant(None) is None
    assert ring.tenant("Basic key-a") is None and ring.tenant("Bearer ") is None


def test_without_keys_everyone_is_the_local_tenant() -> None:
    ring = KeyRing(parse_api_keys(None))
    assert not ring.enabled and ring.tenant(None) is LOCAL


@pytest.mark.parametrize(("text", "names"), [
    ("just-a-key", "not KEY=TENANT"),
    ("k=team:urgent", "priority 'urgent'"),
    ("sha256:abc=team", "64 hex digits"),
    ("=team", "not KEY=TENANT"),
])
def test_a_bad_entry_is_one_line_naming_it(text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names) as caught:
        parse_api_keys(text)
    assert "\n" not in str(caught.value) and "LMQ_API_KEYS entry 1" in str(caught.value)


def test_without_keys_the_gateway_listens_on_loopback_only() -> None:
    bare = Settings(api_keys=None)
    assert listen_host(bare, None) == "127.0.0.1"
    assert listen_host(bare, "localhost") == "127.0.0.1"
    with pytest.raises(ConfigError, match="set LMQ_API_KEYS"):
        listen_host(bare, "0.0.0.0")
    keyed = Settings(api_keys=SecretStr("k=team"))
    assert listen_host(keyed, None) == "0.0.0.0" and listen_host(keyed, "10.1.2.3") == "10.1.2.3"


def test_a_tenant_must_be_a_valid_job_tenant() -> None:
    with pytest.raises(ConfigError, match="tenant 'team a' must be letters"):
        parse_api_keys("sk-1=team a")
