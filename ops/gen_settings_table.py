#!/usr/bin/env python
"""Print the README's settings table (Markdown) from the field descriptions in workers.settings.

    .venv/bin/python ops/gen_settings_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from producers.settings_view import setting_rows  # noqa: E402
from workers.settings import Settings  # noqa: E402


def table() -> str:
    defaults = Settings.model_construct()  # defaults only: ignores the environment and .env
    lines = ["| environment variable | default | description |", "| --- | --- | --- |"]
    for row in setting_rows(defaults):
        default = "" if row.default == "(unset)" else f"`{row.default}`"
        lines.append(f"| `{row.env_var}` | {default} | {row.description.replace('|', '/')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
