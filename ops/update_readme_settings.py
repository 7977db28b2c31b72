#!/usr/bin/env python
"""Rewrite the settings table in README.md from workers.settings (see gen_settings_table.py)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops"))

from gen_settings_table import table  # noqa: E402

readme = ROOT / "README.md"
text = readme.read_text()
pattern = re.compile(r"\| environment variable \| default \| description \|\n(?:\|.*\|\n)+")
if not pattern.search(text):
    sys.exit("README.md has no settings table to replace")
readme.write_text(pattern.sub(lambda _: table() + "\n", text, count=1))
print("README.md settings table updated")
