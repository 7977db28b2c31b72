#!/usr/bin/env python
"""Cancel benchmark: revoke running jobs through real workers, measure what LM Studio sees.

    .venv/bin/python ops/bench_cancel.py [--cancels 200] [--workers 2] [--batch 4]

Starts a private redis-server, the simulator as a subprocess (`python -m simulator`, slow
decode and long replies so every job is still generating when it is revoked) and
`--workers` real `celery -A workers worker` processes. In batches of `--batch`, it sends
chat jobs, waits until each one's predict channel has streamed a few fragments, calls
`app.control.revoke(id)` and reads from the simulator's channel stats:

* latency: revoke call -> the cancel message arriving at the server (p50 / p95 / p99;
  goal p99 < 250 ms). Client and server share this machine's clock;
* tokens generated after the cancel arrived (goal <= 2).

Peer, measured in the same run: `PredictionStream.cancel()` called directly on the SDK
(same simulator, same machine): the floor for the transport. The queue path's extra cost is
Celery's revoke broadcast and the watcher it wakes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from celery import Celery  # noqa: E402

from producers.redis_server import RedisServer  # noqa: E402
from producers.worker_process import WorkerProcess  # noqa: E402
from simulator.testing import running_simulator  # noqa: E402
from workers.celery_config import celery_config  # noqa: E402
from workers.contract import TASK_CHAT, ChatJob, queue_name  # noqa: E402
from workers.settings import Settings  # noqa: E402

CHAT = "llama-3.2-1b-instruct"
SIM_CONFIG = {"timing": {"decode_tokens_per_s": 40.0, "parallel_slots": 16},
              "faults": {"reply_tokens": 4000}}
FRAGMENTS_BEFORE_REVOKE = 3


class ChannelFinder:
    """Maps a job's unique prompt to its predict channel stats on the simulator."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.keys: dict[str, tuple[int, int]] = {}
        self.seq = 0

    def refresh(self) -> None:
        for entry in self.admin.log(type="channelCreate", since_seq=self.seq):
            self.seq = max(self.seq, entry["seq"])
            param = entry["msg"].get("creationParameter", {})
            for message in param.get("history", {}).get("messages", []):
                for part in message.get("content", []):
                    text = part.get("text", "")
                    if text.startswith("bench "):
                        self.keys[text] = (entry["conn"], entry["msg"]["channelId"])

    def stats(self) -> dict[tuple[int, int], dict[str, Any]]:
        return {(c["conn"], c["channel_id"]): c for c in self.admin.channels()}


def wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def queue_cancels(app: Celery, admin: Any, total: int, batch: int) -> tuple[list[float], list[int]]:
    finder, latencies, after = ChannelFinder(admin), [], []
    while len(latencies) < total:
        prompts = [f"bench {uuid.uuid4()}" for _ in range(min(batch, total - len(latencies)))]
        ids = {}
        for prompt in prompts:
            job = ChatJob(model=CHAT, messages=prompt, submitted_at=time.time())
            ids[prompt] = app.send_task(TASK_CHAT, args=[job.model_dump(mode="json")],
                                        queue=queue_name(CHAT)).id

        def generating(prompts: list[str] = prompts) -> bool:
            finder.refresh()
            stats = finder.stats()
            return all(p in finder.keys and stats.get(finder.keys[p], {}).get("fragments", 0)
                       >= FRAGMENTS_BEFORE_REVOKE for p in prompts)

        wait(generating, 60, "jobs generating")
        revoked_at = {}
        for prompt in prompts:
            revoked_at[prompt] = time.time()
            app.control.revoke(ids[prompt])
        wait(lambda ps=prompts: all(finder.stats()[finder.keys[p]]["closed_t"] for p in ps),
             60, "channels closed")
        stats = finder.stats()
        for prompt in prompts:
            channel = stats[finder.keys[prompt]]
            if channel["cancel_t"] is None:
                raise RuntimeError(f"cancel never reached the server for {prompt}")
            latencies.append(channel["cancel_t"] - revoked_at[prompt])
            after.append(channel["fragments_after_cancel"])
    return latencies, after


def direct_cancels(host: str, admin: Any, total: int) -> list[float]:
    """Peer: cancel() on the SDK stream directly; latency to the server's receipt."""
    import lmstudio as lms

    finder, latencies = ChannelFinder(admin), []
    with lms.Client(host) as client:
        model = client.llm.model(CHAT)
        for _ in range(total):
            prompt = f"bench {uuid.uuid4()}"
            stream = model.respond_stream(prompt)
            fragments = iter(stream)
            for _ in range(FRAGMENTS_BEFORE_REVOKE):
                next(fragments)
            reader = threading.Thread(target=lambda f=fragments: [None for _ in f])
            reader.start()
            finder.refresh()
            started = time.time()
            stream.cancel()
            reader.join(30)
            wait(lambda p=prompt: (finder.refresh() or True) and p in finder.keys
                 and finder.stats()[finder.keys[p]]["cancel_t"], 30, "direct cancel")
            latencies.append(finder.stats()[finder.keys[prompt]]["cancel_t"] - started)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def report(name: str, latencies: list[float]) -> dict[str, float]:
    figures = {q: percentile(latencies, q) * 1000 for q in (0.5, 0.95, 0.99)}
    print(f"{name:<34} n={len(latencies):<4} p50={figures[0.5]:7.1f} ms  "
          f"p95={figures[0.95]:7.1f} ms  p99={figures[0.99]:7.1f} ms  "
          f"max={max(latencies) * 1000:7.1f} ms")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cancels", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--direct", type=int, default=50, help="peer cancels via the SDK")
    args = parser.parse_args()
    with RedisServer() as redis_server, \
            running_simulator(SIM_CONFIG, in_process=False) as sim:
        env = {"LMQ_BROKER_URL": redis_server.url, "LMQ_RESULT_BACKEND": redis_server.url,
               "LMQ_LMSTUDIO_HOST": sim.host, "LMQ_GPU_MEMORY": "24GiB",
               "LMQ_CONCURRENCY": str(max(args.batch, 2))}
        workers = [WorkerProcess(CHAT, env).start() for _ in range(args.workers)]
        app = Celery("bench-cancel")
        app.conf.update(celery_config(Settings(broker_url=redis_server.url,
                                               result_backend=redis_server.url)))
        try:
            wait(lambda: len(app.control.ping(timeout=0.5)) >= args.workers, 120,
                 "workers ready")
            started = time.monotonic()
            latencies, after = queue_cancels(app, sim.admin, args.cancels, args.batch)
            elapsed = time.monotonic() - started
            peer = direct_cancels(sim.host, sim.admin, args.direct)
        finally:
            for worker in workers:
                worker.stop()
    print(f"\n{args.cancels} cancels of running jobs through {args.workers} workers "
          f"in {elapsed:.1f}s (batches of {args.batch}):")
    queue = report("revoke -> cancel at server (queue)", latencies)
    direct = report("cancel() -> at server (direct SDK)", peer)
    print(f"ratio queue/direct: p50 x{queue[0.5] / direct[0.5]:.1f}, "
          f"p99 x{queue[0.99] / direct[0.99]:.1f}")
    print(f"tokens (fragments) after cancel: mean {statistics.mean(after):.2f}, max {max(after)}, "
          f"p99 {percentile([float(a) for a in after], 0.99):.0f}  (goal <= 2)")
    ok = queue[0.99] < 250 and max(after) <= 2
    print(f"goals (p99 < 250 ms, <= 2 tokens after cancel): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    from ops.benchlib.entry import run

    raise SystemExit(run(main))
