"""Fixtures of the fault-injection suite (real Redis, simulator, worker processes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.support import ResultTap, job_queue


@pytest.fixture()
def tap(redis_url: str) -> Iterator[ResultTap]:
    listener = ResultTap(redis_url)
    yield listener
    listener.close()


@pytest.fixture()
def queue(redis_url: str):  # type: ignore[no-untyped-def]
    producer = job_queue(redis_url)
    yield producer
    producer.close()
