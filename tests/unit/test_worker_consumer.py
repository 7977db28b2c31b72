"""The worker's Gossip step after the broker connection was lost (issue 23): Celery drops the
connection (`c.connection = None`) before restarting its steps, and its own Gossip then
logged "Error on restarting Gossip: AttributeError" with ~150 lines of tracebacks."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from workers.consumer import Consumer, Gossip
from workers.settings import Settings


class _Transport:
    connection_errors = (redis.ConnectionError,)
    channel_errors = ()


class _Channel:
    def __init__(self, error: BaseException | None) -> None:
        self.connection = _Transport()
        self.error = error
        self.closed = False

    def close(self) -> None:
        self.closed = True
        if self.error is not None:
            raise self.error


def _gossip(channel: _Channel) -> Any:
    gossip = Gossip.__new__(Gossip)  # the step's state only: no app, no broker
    gossip.consumers = [SimpleNamespace(channel=channel, cancel=lambda: None)]
    return gossip


def test_broker_gone_after_the_connection_was_dropped_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = _Channel(redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379."))
    with caplog.at_level(logging.WARNING, logger="workers.consumer"):
        _gossip(channel).stop(SimpleNamespace(connection=None))
    assert channel.closed
    assert [r.getMessage() for r in caplog.records] == [
        "gossip: event queue not deleted, broker unreachable (Error 111 connecting to "
        "127.0.0.1:6379.)"
    ]
    assert all(r.exc_info is None for r in caplog.records)


def test_another_error_still_reaches_celery() -> None:
    channel = _Channel(ValueError("a bug, not an outage"))
    with pytest.raises(ValueError, match="a bug"):
        _gossip(channel).stop(SimpleNamespace(connection=None))


def test_a_clean_close_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    channel = _Channel(None)
    with caplog.at_level(logging.DEBUG, logger="workers.consumer"):
        _gossip(channel).shutdown(SimpleNamespace(connection=_Transport()))
    assert channel.closed and not caplog.records


def test_the_worker_runs_this_gossip_in_place_of_celerys() -> None:
    from workers.celery import worker_config

    steps = Consumer.Blueprint.default_steps
    assert "workers.consumer:Gossip" in steps
    assert "celery.worker.consumer.gossip:Gossip" not in steps
    assert Gossip.name == "celery.worker.consumer.gossip.Gossip"  # what `requires` names
    assert worker_config(Settings())["worker_consumer"] == "workers.consumer:Consumer"
