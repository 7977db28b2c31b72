"""A Redis blip inside admission is transient: retried in place, then a TransientError."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import pytest
import redis

from tests.support.services import start_redis
from tests.support.wait import wait_until
from workers.admission.estimate import ModelCost
from workers.admission.gate import AdmissionGate
from workers.admission.semaphore import GroupSemaphore
from workers.error import AdmissionUnavailableError, TransientError

pytestmark = [pytest.mark.timeout(60)]
GIB = 1 << 30


@pytest.fixture()
def own_redis(tmp_path) -> Iterator[object]:  # type: ignore[no-untyped-def]
    server = start_redis(data_dir=str(tmp_path))  # its own server: the test stops it
    yield server
    server.stop()


@pytest.fixture()
def gate() -> Iterator[Callable[[str, int], AdmissionGate]]:
    """Gates on a Redis the test stops; closed afterwards, so that no heartbeat thread goes
    on renewing leases on a stopped server for the rest of the session."""
    made: list[AdmissionGate] = []

    def make(url: str, retries: int) -> AdmissionGate:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        semaphore = GroupSemaphore(client, "blip", 8 * GIB, 15.0)
        made.append(AdmissionGate(semaphore, ModelCost("m", GIB, 1024, "setting", 4096), 4,
                                  retries=retries, backoff_s=0.2))
        return made[-1]

    yield make
    for admission in made:
        with contextlib.suppress(redis.RedisError):  # the heartbeat stops first
            admission.close()


def admit_once(admission: AdmissionGate) -> None:
    with admission.admit("job-1", 100, 100, lambda: False):
        pass


def test_redis_down_through_the_retries_is_a_transient_error(own_redis, gate) -> None:  # type: ignore[no-untyped-def]
    admission = gate(own_redis.url, retries=2)
    admit_once(admission)  # weights held, Redis fine
    own_redis.stop()
    with pytest.raises(AdmissionUnavailableError) as caught:
        admit_once(admission)
    assert isinstance(caught.value, TransientError) and "after 2 retries" in str(caught.value)
    rebuilt = type(caught.value)(*caught.value.args)  # Celery's JSON backend rebuilds so
    assert str(rebuilt) == str(caught.value)


def test_a_redis_restart_during_admission_is_retried(own_redis, gate) -> None:  # type: ignore[no-untyped-def]
    admission = gate(own_redis.url, retries=6)
    admit_once(admission)
    own_redis.restart()  # connections of the client are now dead; data is gone too
    admit_once(admission)  # reconnects (and re-holds the weights' lease)
    own_redis.stop()
    outcome: list[BaseException | None] = []
    runner = threading.Thread(target=lambda: outcome.append(_catch(admission)))
    runner.start()
    wait_until(lambda: runner.is_alive(), timeout=5)
    own_redis.start()
    runner.join(30)
    assert outcome == [None]


def _catch(admission: AdmissionGate) -> BaseException | None:
    try:
        admit_once(admission)
    except BaseException as exc:  # noqa: BLE001 - reported to the test thread
        return exc
    return None
