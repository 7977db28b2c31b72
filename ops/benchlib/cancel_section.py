"""Cancel latency through real workers vs `PredictionStream.cancel()` on the SDK.

Reuses `ops/bench_cancel.py` (its simulator config, `queue_cancels`, `direct_cancels`).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from ops import bench_cancel
from ops.benchlib.figure import Figure
from producers.redis_server import RedisServer
from producers.worker_process import WorkerProcess
from simulator.testing import running_simulator
from workers.celery_config import celery_config
from workers.settings import Settings


def measure(cancels: int, say: Any) -> list[Figure]:
    say(f"cancel latency: {cancels} revokes of running jobs vs direct SDK cancel()")
    with RedisServer() as server, \
            running_simulator(bench_cancel.SIM_CONFIG, in_process=False) as sim:
        env = {"LMQ_BROKER_URL": server.url, "LMQ_RESULT_BACKEND": server.url,
               "LMQ_LMSTUDIO_HOST": sim.host, "LMQ_GPU_MEMORY": "24GiB",
               "LMQ_CONCURRENCY": "4"}
        worker = WorkerProcess(bench_cancel.CHAT, env).start()
        app = Celery("bench-report-cancel")
        app.conf.update(celery_config(Settings(broker_url=server.url,
                                               result_backend=server.url)))
        try:
            bench_cancel.wait(lambda: app.control.ping(timeout=0.5), 120, "worker ready")
            queued, after = bench_cancel.queue_cancels(app, sim.admin, cancels, 4)
            direct = bench_cancel.direct_cancels(sim.host, sim.admin, max(10, cancels // 2))
        finally:
            worker.stop()
            app.close()
    pct = bench_cancel.percentile
    return [
        Figure("cancel", "revoke -> cancel at LM Studio, p50", "ms", 1000 * pct(queued, 0.5),
               1000 * pct(direct, 0.5), "direct SDK cancel()", higher_is_better=False),
        Figure("cancel", "revoke -> cancel at LM Studio, p99", "ms", 1000 * pct(queued, 0.99),
               1000 * pct(direct, 0.99), "direct SDK cancel()", higher_is_better=False,
               goal="< 250 ms", notes={"max_tokens_after_cancel": max(after)}),
    ]
