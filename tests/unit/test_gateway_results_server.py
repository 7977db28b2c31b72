"""The gateway sends a job before its result subscription is confirmed only when the
results live on the broker's Redis server (then Redis runs the SUBSCRIBE first)."""

from __future__ import annotations

import pytest

from producers.celery_app import producer_app
from producers.gateway.waiting import Results
from workers.settings import Settings


@pytest.mark.parametrize(("backend", "broker", "same"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", True),
    ("redis://127.0.0.1:6379/2", "redis://127.0.0.1/5", True),  # databases share pub/sub
    ("redis://127.0.0.1:6380/0", "redis://127.0.0.1:6379/0", False),
    ("redis://results.internal:6379/0", "redis://broker.internal:6379/0", False),
    ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock", True),
    ("redis://127.0.0.1:6379/0", "amqp://guest@127.0.0.1//", False),
])
def test_results_on_the_broker_server(backend: str, broker: str, same: bool) -> None:
    app = producer_app(Settings(broker_url="redis://127.0.0.1:6379/0"))
    results = Results(app, backend, broker)
    assert results.on_broker_server is same
