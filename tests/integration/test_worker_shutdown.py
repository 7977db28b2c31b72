"""Ctrl-C on a worker while Redis is down (issue 23): each shutdown step that cannot reach
Redis says so in one line; before, about 90 lines of chained tracebacks (`metrics:
on_worker_shutdown failed`, the GPU leases' release) followed the warm shutdown.

Nor does losing Redis itself: Celery's consumer restarting its steps logged "Error on
restarting Gossip" with ~150 lines of tracebacks (`workers.consumer`), before or after "Warm
shutdown" depending on when the consumer noticed, so the test checks everything logged after
the worker was ready, with Ctrl-C sent at once and after the consumer noticed the loss."""

from __future__ import annotations

import signal

import pytest

from producers.local_pool import local_pool
from producers.redis_server import redis_answers
from tests.support.services import start_redis
from tests.support.wait import wait_until

CHAT = "llama-3.2-1b-instruct"

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("after_noticed", [False, True], ids=["at-once", "after-noticed"])
def test_ctrl_c_while_redis_is_down_prints_no_traceback(sim: object, after_noticed: bool
                                                        ) -> None:
    redis = start_redis()  # its own server: this test stops it
    try:
        with local_pool(redis.url, sim.host, [CHAT]) as pool:  # type: ignore[attr-defined]
            worker = pool.workers[0]
            redis.stop()
            wait_until(lambda: not redis_answers(redis.url), timeout=10,
                       message="Redis stopped")
            if after_noticed:
                wait_until(lambda: "Connection to broker lost" in worker.log_tail(200),
                           timeout=20, message="the consumer noticing Redis is gone")
            assert worker.process is not None
            worker.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
            worker.process.wait(timeout=60)
            log = worker.log_tail(100_000)
    finally:
        redis.stop()
    served = log.split(" ready.", 1)[1]
    assert "Traceback" not in served, served[-3000:]
    shutdown = served.split("Warm shutdown", 1)[1]
    assert "metrics: on_worker_shutdown skipped, Redis unreachable" in shutdown
    assert "GPU leases not released, Redis unreachable" in shutdown
