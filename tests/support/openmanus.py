"""OpenManus for the tests that drive it: installed by `ops/setup.d/openmanus`."""

from __future__ import annotations

import os

import pytest


def require_openmanus() -> None:
    """Skip the calling module when OpenManus is missing; in CI (where `ops/setup` installs
    it) a missing OpenManus is an error, not a skip."""
    try:
        import app.llm  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise
        pytest.skip(f"OpenManus is not installed ({exc}); run ops/setup",
                    allow_module_level=True)
