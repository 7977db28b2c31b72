"""Which broker transport a process uses: the tenant-purging one everywhere on Redis, and
in worker processes the one that holds jobs under leases (no network)."""

from __future__ import annotations

from ssl import CERT_NONE
from types import SimpleNamespace

import pytest

from workers.celery_config import CLIENT_TRANSPORT, celery_config
from workers.delivery import held_transport, redelivery
from workers.settings import Settings


@pytest.mark.parametrize("url, expected", [
    ("redis://127.0.0.1:6379/0", redelivery.TRANSPORT),
    ("rediss://127.0.0.1:6380/0?ssl_cert_reqs=required", redelivery.TRANSPORT),
    ("amqp://guest:guest@127.0.0.1:5672//", None),  # RabbitMQ requeues by itself
])
def test_held_transport_for_redis_brokers(url: str, expected: str | None) -> None:
    conf = SimpleNamespace(broker_url=url, broker_transport=None, broker_use_ssl=None)
    redelivery.use_held_transport(conf=conf)
    assert conf.broker_transport == expected
    assert conf.broker_use_ssl is None  # the URL's ssl options are kept as they are


def test_bare_rediss_keeps_kombus_unverified_default() -> None:
    conf = SimpleNamespace(broker_url="rediss://h:6380/0", broker_transport=None,
                           broker_use_ssl=None)
    redelivery.use_held_transport(conf=conf)
    assert conf.broker_transport == redelivery.TRANSPORT
    assert conf.broker_use_ssl == {"ssl_cert_reqs": CERT_NONE}


def test_an_explicit_transport_is_kept() -> None:
    conf = SimpleNamespace(broker_url="redis://h:1/0", broker_transport="my.transport:T")
    redelivery.use_held_transport(conf=conf)
    assert conf.broker_transport == "my.transport:T"


def test_the_held_transport_is_kombus_redis_transport() -> None:
    from kombu.transport import redis as kombu_redis

    assert redelivery.TRANSPORT == "workers.delivery.held_transport:Transport"
    assert issubclass(held_transport.Transport, kombu_redis.Transport)
    assert held_transport.Transport.driver_type == "redis"
    assert held_transport.Transport.Channel.QoS is held_transport.HeldQoS


@pytest.mark.parametrize("url, ssl", [
    ("redis://h:6379/0", None),
    ("rediss://h:6380/0?ssl_cert_reqs=required", None),  # the URL's options, as they are
    ("rediss://h:6380/0", {"ssl_cert_reqs": CERT_NONE}),  # kombu's default for bare rediss
])
def test_every_process_on_redis_uses_the_tenant_purging_transport(
        url: str, ssl: dict[str, object] | None) -> None:
    config = celery_config(Settings(broker_url=url, result_backend=url))
    assert config["broker_transport"] == CLIENT_TRANSPORT
    assert config.get("broker_use_ssl") == ssl
