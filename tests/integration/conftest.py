"""Fixtures shared by the integration modules that run one pool per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from producers.flower_process import FlowerProcess


@pytest.fixture(scope="module")
def sim() -> Iterator[object]:
    """A simulator subprocess for the whole module."""
    from simulator.testing import running_simulator

    with running_simulator(in_process=False) as running:
        yield running


@pytest.fixture()
def flowers() -> Iterator[list[FlowerProcess]]:
    """The Flower processes a test starts (`tests.e2e.support.start_flower`), stopped after it."""
    started: list[FlowerProcess] = []
    yield started
    for flower in started:
        flower.stop()
