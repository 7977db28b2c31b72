"""Fixtures shared by the integration modules that run one pool per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def sim() -> Iterator[object]:
    """A simulator subprocess for the whole module."""
    from simulator.testing import running_simulator

    with running_simulator(in_process=False) as running:
        yield running
