"""Janitors restore each of a dead worker's jobs exactly once, and nothing it gave back.

Real redis-server, kombu's Redis transport (and the worker's, `workers.delivery.held_transport`) and
`workers.delivery.redelivery.Redelivery` objects driven directly (no worker processes: the
interleavings are set up step by step).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue

from tests.faults.support import KEY_PREFIX
from workers import keys
from workers.delivery import redelivery
from workers.delivery.redelivery import Redelivery

pytestmark = [pytest.mark.timeout(120)]

DEAD = "dead@lmq"
QUEUE = Queue("lmq.janitor-test", Exchange("lmq.janitor-test"), "lmq.janitor-test")


@pytest.fixture(params=["", KEY_PREFIX], ids=["no-prefix", "key-prefix"])
def broker(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Connection]:
    """A kombu connection to the test's Redis, with or without a global key prefix."""
    with Connection(redis_url, transport_options={"global_keyprefix": request.param}) as conn:
        yield conn


def _publish(broker: Connection, count: int) -> None:
    producer = Producer(broker.default_channel)
    for i in range(count):
        producer.publish({"n": i}, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key,
                         declare=[QUEUE], serializer="json")


def _take(broker: Connection, worker: str) -> str:
    """A worker takes one message and books it (kombu's `unacked`, the worker's held set)."""
    channel = broker.default_channel
    message = channel.basic_get(QUEUE.name, no_ack=False)
    assert message is not None
    prefix = channel.global_keyprefix
    raw = redis.Redis(connection_pool=channel.pool)
    raw.sadd(f"{prefix}{keys.held(worker)}", message.delivery_tag)
    raw.sadd(f"{prefix}{keys.held_workers()}", worker)
    return str(message.delivery_tag)


def _janitor(broker: Connection, name: str) -> Redelivery:
    return Redelivery(broker.clone(), name, lease_s=60)


def _raw(broker: Connection) -> tuple[redis.Redis, str]:
    channel = broker.default_channel
    return redis.Redis(connection_pool=channel.pool), channel.global_keyprefix


def test_a_janitor_with_a_stale_listing_leaves_a_retaken_job_alone(broker: Connection) -> None:
    _publish(broker, 1)
    tag = _take(broker, DEAD)  # DEAD holds the job and has no lease: dead
    first, second = _janitor(broker, "a@lmq"), _janitor(broker, "b@lmq")
    stale = {t.decode() for t in second.client.smembers(second.key(keys.held(DEAD)))}
    assert first.restore_tag(DEAD, tag, check_alive=True) == 1  # back on the queue
    assert _take(broker, "live@lmq") == tag  # a live worker runs it: same delivery tag
    for listed in stale:  # the second janitor acts on what it listed before
        assert second.restore_tag(DEAD, listed, check_alive=True) == 0
    client, prefix = _raw(broker)
    assert client.llen(f"{prefix}{QUEUE.name}") == 0  # not queued a second time
    assert client.hexists(f"{prefix}unacked", tag)  # the live worker's booking is intact
    assert client.sismember(f"{prefix}{keys.held('live@lmq')}", tag)


@pytest.mark.parametrize("janitors", [2, 4])
def test_janitors_sweeping_at_once_restore_each_job_once(broker: Connection,
                                                         janitors: int) -> None:
    client, prefix = _raw(broker)
    for round_ in range(10):
        _publish(broker, 6)
        tags = [_take(broker, DEAD) for _ in range(4)]  # booked, then DEAD died
        popping = f"{prefix}{keys.popping(DEAD, QUEUE.name)}"
        for _ in range(2):  # taken but not booked when DEAD died
            client.lmove(f"{prefix}{QUEUE.name}", popping, "RIGHT", "LEFT")
        assert client.llen(f"{prefix}{QUEUE.name}") == 0
        restored = _sweep_at_once([_janitor(broker, f"j{i}@lmq") for i in range(janitors)])
        assert sum(restored) == 6, (round_, restored)
        entries = client.lrange(f"{prefix}{QUEUE.name}", 0, -1)
        assert len(entries) == len(set(entries)) == 6
        assert not client.exists(f"{prefix}unacked", popping, f"{prefix}{keys.held(DEAD)}")
        assert not client.sismember(f"{prefix}{keys.held_workers()}", DEAD)
        assert len(set(tags)) == 4
        client.delete(f"{prefix}{QUEUE.name}")


def test_a_job_its_worker_gave_back_is_not_restored_when_that_worker_dies(
        broker: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """kombu's own restore (a requeue, `Reject(requeue=True)`; shutdown) drops the tag
    from the worker's held set: else the janitor queued the job again once that worker
    died, while another worker ran it."""
    _publish(broker, 1)
    with broker.clone(transport="workers.delivery.held_transport:Transport") as held_broker:
        giver = _janitor(held_broker, "giver@lmq")
        monkeypatch.setattr(redelivery, "_current", giver)  # as in the giver's process
        channel = held_broker.default_channel
        message = channel.basic_get(QUEUE.name, no_ack=False)  # booked and held (HeldQoS)
        client, prefix = _raw(broker)
        assert client.sismember(f"{prefix}{keys.held('giver@lmq')}", message.delivery_tag)
        client.sadd(f"{prefix}{keys.held_workers()}", "giver@lmq")
        message.reject(requeue=True)  # LM Studio lost: back to the queue
        monkeypatch.setattr(redelivery, "_current", None)
    tag = _take(broker, "live@lmq")  # another worker runs it: same delivery tag
    client.set(f"{prefix}{keys.alive('live@lmq')}", "1", ex=60)
    assert tag == message.delivery_tag
    assert _janitor(broker, "janitor@lmq").sweep() == 0  # the giver has no lease: dead
    assert client.llen(f"{prefix}{QUEUE.name}") == 0
    assert client.hexists(f"{prefix}unacked", tag)
    assert not client.sismember(f"{prefix}{keys.held_workers()}", "giver@lmq")


def _sweep_at_once(janitors: list[Redelivery]) -> list[int]:
    """Every janitor sweeps at the same moment; how many jobs each restored."""
    start = threading.Barrier(len(janitors))
    counts = [0] * len(janitors)

    def run(i: int) -> None:
        start.wait()
        counts[i] = janitors[i].sweep()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(janitors))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for janitor in janitors:
        janitor.connection.release()
    return counts
