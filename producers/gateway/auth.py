"""API keys of the gateway: `LMQ_API_KEYS`, kept only as sha256 hashes in memory.

    LMQ_API_KEYS="sk-team-a-secret=team-a:high,sha256:9f86d0...=team-b"

Each entry names a tenant and a default priority (high, normal, low). A client sends
`Authorization: Bearer <key>`; the gateway hashes it and looks the hash up, so neither the
process nor a log holds a plain key after start-up, and a key given as `sha256:<hex>` never
exists in plain text on the gateway's machine at all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from workers.contract import TENANT_PATTERN
from workers.error import ConfigError

PRIORITIES = ("high", "normal", "low")
HASH_PREFIX = "sha256:"


@dataclass(frozen=True)
class Tenant:
    """Who a request is from: the tenant its key names, and that key's default priority."""

    name: str
    priority: str = "normal"


LOCAL = Tenant("local")  # every request when no key is configured (127.0.0.1 only)


def hash_key(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def parse_api_keys(text: str | None) -> dict[str, Tenant]:
    """`LMQ_API_KEYS` -> {sha256 hash: tenant}; ConfigError naming a bad entry."""
    keys: dict[str, Tenant] = {}
    for number, entry in enumerate((text or "").split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        key, sep, owner = entry.rpartition("=")
        tenant, _, priority = owner.partition(":")
        priority = priority or "normal"
        if not sep or not key or not tenant:
            raise ConfigError(f"LMQ_API_KEYS entry {number} is not KEY=TENANT[:PRIORITY]")
        if not re.match(TENANT_PATTERN, tenant):
            raise ConfigError(f"LMQ_API_KEYS entry {number}: tenant {tenant!r} must be letters, "
                              "digits and . _ @ - (at most 64, starting with a letter or digit)")
        if priority not in PRIORITIES:
            raise ConfigError(f"LMQ_API_KEYS entry {number} (tenant {tenant!r}): priority "
                              f"{priority!r} is not one of {', '.join(PRIORITIES)}")
        hashed = key.lower() if key.lower().startswith(HASH_PREFIX) else hash_key(key)
        if len(hashed) != len(HASH_PREFIX) + 64:
            raise ConfigError(f"LMQ_API_KEYS entry {number} (tenant {tenant!r}): a sha256: "
                              "key has 64 hex digits (`lmq serve --hash-key KEY` prints it)")
        keys[hashed] = Tenant(tenant, priority)
    return keys


class KeyRing:
    """Checks bearer keys against the configured hashes."""

    def __init__(self, keys: dict[str, Tenant]) -> None:
        self._keys = keys

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def tenant(self, authorization: str | None) -> Tenant | None:
        """The tenant of an `Authorization` header, or None for a missing or unknown key."""
        if not self._keys:
            return LOCAL
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        hashed = hash_key(key.strip())
        for known, tenant in self._keys.items():
            if hmac.compare_digest(known, hashed):
                return tenant
        return None
