"""The gateway's one result subscription, against a real redis-server whose server side
kills the connection while waits are subscribing (CI once saw a 500 here: redis-py's
pub/sub reconnected from two tasks at once and wrote to a socket being replaced)."""

from __future__ import annotations

import asyncio

import redis

from producers.gateway.result_feed import ResultFeed

NAME = "lmq-gateway-feed-test"


def kill_feed(server: redis.Redis) -> int:
    killed = 0
    for client in server.client_list():
        if client.get("name") == NAME and int(client.get("sub", 0)) > 0:
            killed += server.client_kill_filter(_id=client["id"])
    return killed


def test_every_wait_hears_its_result_across_killed_connections(redis_url: str) -> None:
    server = redis.Redis.from_url(redis_url)

    async def rounds() -> list[tuple[int, int, int]]:
        feed = ResultFeed(redis_url, client_name=NAME)
        assert (await feed.watch("first")).subscribed
        seen = []
        try:
            for round_ in range(10):
                killed = kill_feed(server)
                keys = [f"job-{round_}-{i}" for i in range(20)]
                # watches race the reader noticing the loss and renewing the connection
                waits = await asyncio.gather(*(feed.watch(key) for key in keys))
                await asyncio.sleep(0.5)  # past RECONNECT_S: the renewed feed listens
                for wait in waits:
                    wait.take()  # forget the renewal's "re-read now" wake-up
                for key in keys:
                    server.publish(key, b"SUCCESS")
                heard = await asyncio.gather(*(asyncio.wait_for(w.wait(), 5) for w in waits),
                                             return_exceptions=True)
                assert all(h is True for h in heard), heard
                seen.append((killed, sum(w.data == b"SUCCESS" for w in waits), len(keys)))
                for key, wait in zip(keys, waits, strict=True):
                    feed.unwatch(key, wait)
        finally:
            await feed.aclose()
        return seen

    for killed, heard, asked in asyncio.run(rounds()):
        assert killed == 1  # one connection for every wait, killed each round
        assert heard == asked
    server.close()
