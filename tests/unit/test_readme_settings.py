"""The README's settings table is generated from workers.settings: keep them in step."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_matches_the_settings() -> None:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "ops" / "gen_settings_table.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    readme = (ROOT / "README.md").read_text()
    missing = [row for row in gen.table().splitlines() if row not in readme]
    assert not missing, "README settings table is stale; run ops/gen_settings_table.py:\n" + \
        "\n".join(missing)
