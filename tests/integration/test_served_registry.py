"""Workers' registrations in Redis (`workers.served_registry`), on a real redis-server."""

from __future__ import annotations

import time

import redis

from workers import keys
from workers.served_registry import LAPSE_S, Registration, live_workers

MODEL = "llama-3.2-1b-instruct"


def test_a_registration_lives_while_serving_and_goes_with_stop(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    serving = [True]
    registration = Registration(client, MODEL, "w1@host", lambda: serving[0]).start()
    assert live_workers(client, MODEL) == ["w1@host"]
    assert live_workers(client, "other-model") == []
    serving[0] = False  # LM Studio lost: the worker consumes nothing, so it is not served
    registration.renew()
    assert live_workers(client, MODEL) == []
    serving[0] = True
    registration.renew()
    assert live_workers(client, MODEL) == ["w1@host"]
    registration.stop()
    assert live_workers(client, MODEL) == []


def test_a_killed_workers_registration_lapses(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    Registration(client, MODEL, "killed@host").renew()  # never renewed again, never stopped
    assert live_workers(client, MODEL) == ["killed@host"]
    assert live_workers(client, MODEL, now=time.time() + LAPSE_S + 1) == []
    # the next renewal of any worker sweeps lapsed entries
    client.zadd(keys.served(), {f"{MODEL}|killed@host": time.time() - 1})
    Registration(client, MODEL, "alive@host").renew()
    assert client.zrange(keys.served(), 0, -1) == [f"{MODEL}|alive@host".encode()]
