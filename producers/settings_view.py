"""Settings as rows (name, env var, value, description) with secrets masked.

`lmq config show` prints them and ops/gen_settings_table.py turns them into the README's
settings table, both from the field descriptions in workers.settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from workers.settings import SECRET_FIELDS, Settings

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@",
                           re.IGNORECASE)


def mask_url(value: str) -> str:
    """redis://user:secret@host -> redis://user:****@host (no password: unchanged)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:****@", value)


@dataclass(frozen=True)
class SettingRow:
    name: str
    env_var: str
    value: str
    default: str
    description: str


def shown(name: str, value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, SecretStr):
        return "****" if value.get_secret_value() else ""
    text = str(value)
    return mask_url(text) if name in SECRET_FIELDS else text


def setting_rows(settings: Settings) -> list[SettingRow]:
    prefix = str(Settings.model_config.get("env_prefix", ""))
    rows = []
    for name, field in Settings.model_fields.items():
        rows.append(SettingRow(
            name=name, env_var=f"{prefix}{name}".upper(),
            value=shown(name, getattr(settings, name)),
            default=shown(name, field.default),
            description=field.description or ""))
    return rows
