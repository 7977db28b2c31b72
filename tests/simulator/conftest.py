"""Fixtures for the simulator's own tests: an in-process simulator per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import lmstudio as lms
import pytest

from simulator.testing import RunningSimulator, running_simulator

LLM_KEY = "llama-3.2-1b-instruct"
BIG_LLM_KEY = "qwen2.5-7b-instruct"
EMBED_KEY = "text-embedding-nomic-embed-text-v1.5"


def as_lm_studio(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config with ModelInfo.path as LM Studio reports it (relative), which the CLI
    does by default and `running_simulator` does not (see its docstring)."""
    config = dict(config or {})
    config["server"] = {"model_paths": "relative", **config.get("server", {})}
    return config


@pytest.fixture()
def simulator() -> Iterator[RunningSimulator]:
    """A simulator with the default config (what other engineers test against)."""
    with running_simulator(as_lm_studio()) as sim:
        yield sim


@pytest.fixture()
def simulator_factory() -> Iterator[Callable[..., RunningSimulator]]:
    """Start simulators with config overrides; all are stopped at teardown."""
    with ExitStack() as stack:
        def start(config: dict[str, Any] | None = None, **kwargs: Any) -> RunningSimulator:
            return stack.enter_context(running_simulator(as_lm_studio(config), **kwargs))
        yield start


@pytest.fixture()
def client(simulator: RunningSimulator) -> Iterator[lms.Client]:
    with lms.Client(simulator.host) as c:
        yield c
