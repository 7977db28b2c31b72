#!/usr/bin/env python
"""Redis commands and round trips per chat job, at the stress timing (issue 22).

    .venv/bin/python ops/bench_redis_commands.py [--jobs 300] [--round-trips]

Starts a private redis-server, the simulator (16-token replies at 1,000 tokens/s per
slot) and one worker (LMQ_SLOTS 4), runs warm-up jobs, then `--jobs` chat jobs through
the pool, and prints per job:
* every command Redis executed (`INFO commandstats` after minus before, / jobs), and the
  share of it sent by the worker process (a MONITOR connection attributes each command
  to its client's TCP port; /proc maps the ports to the worker's pid);
* with `--round-trips`: the worker's round trips to Redis, counted as `sendto` calls on
  its Redis sockets by `strace -f` (a pipeline or script is one; strace slows the worker,
  so time-driven commands such as progress flushes and watcher polls count a little more).
Commands of the producer (submit, result waits) are in the total, not in the worker's.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from ops import bench_pool  # noqa: E402
from producers.local_pool import local_pool  # noqa: E402
from producers.redis_server import RedisServer  # noqa: E402
from simulator.admin import SimulatorAdmin  # noqa: E402


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def pid_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets process `pid` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class Monitor(threading.Thread):
    """Counts the commands Redis executes, per client port, while it runs."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.counts: collections.Counter[tuple[int, str]] = collections.Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        with self.client.monitor() as monitor:
            for command in monitor.listen():
                if self.stop.is_set():
                    return
                port = int(command.get("client_port") or 0)
                name = str(command["command"]).split(" ", 1)[0].strip('"').lower()
                self.counts[(port, name)] += 1


def run_jobs(queue: Any, n: int) -> float:
    handles = queue.submit_many([{"model": bench_pool.CHAT, "messages": text,
                                  "config": {"max_tokens": bench_pool.MAX_TOKENS}}
                                 for text in bench_pool.prompts(n)])
    started = time.perf_counter()
    for handle in handles:
        handle.result(timeout=600)
    return time.perf_counter() - started


def strace_round_trips(pid: int, queue: Any, n: int,
                       redis_port: int) -> tuple[collections.Counter[str], int]:
    """(sendto calls on the worker's Redis sockets by their first command, all of its
    socket writes) over n jobs."""
    out = Path(f"/tmp/lmq-strace-{os.getpid()}.txt")
    proc = subprocess.Popen(["strace", "-f", "-yy", "-e", "trace=sendto,sendmsg,write",
                             "-o", str(out), "-p", str(pid)], stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attach to every thread
    run_jobs(queue, n)
    proc.terminate()
    proc.wait()
    to_redis = re.compile(rf"->\[?(127\.0\.0\.1|::1)\]?:{redis_port}\]")
    lines = [ln for ln in out.read_text().splitlines() if "sendto(" in ln or "write(" in ln]
    out.unlink()
    first = re.compile(r'"\*\d+\\r\\n\$\d+\\r\\n([A-Za-z]+)')
    trips: collections.Counter[str] = collections.Counter()
    for line in lines:
        if to_redis.search(line):
            match = first.search(line)
            trips[match.group(1).upper() if match else "?"] += 1
    return trips, len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--round-trips", action="store_true")
    args = parser.parse_args()
    from simulator.testing import running_simulator

    config = {**bench_pool.SIM_CONFIG, "timing": {**bench_pool.SIM_CONFIG["timing"],
                                                  "parallel_slots": 4}}
    with RedisServer() as server, running_simulator(config, in_process=False) as sim, \
            local_pool(server.url, sim.host, [bench_pool.CHAT],
                       extra_env={"LMQ_SLOTS": "4"}) as pool:
        SimulatorAdmin(sim.host).set_timing(**bench_pool.PROFILES["stress"])
        pid = pool.workers[0].process.pid  # type: ignore[union-attr]
        run_jobs(pool.queue, 20)  # warm-up
        client = redis.Redis.from_url(server.url)
        monitor = Monitor(server.url)
        monitor.start()
        time.sleep(0.3)
        before = commandstats(client)
        elapsed = run_jobs(pool.queue, args.jobs)
        after = commandstats(client)
        worker_ports = pid_ports(pid)
        monitor.stop.set()
        client.ping()  # wakes the monitor
        monitor.join(5)
        report(args.jobs, elapsed, before, after, monitor.counts, worker_ports)
        if args.round_trips:
            port = int(server.url.rsplit(":", 1)[1].split("/")[0])
            trips, sends = strace_round_trips(pid, pool.queue, args.jobs, port)
            print(f"worker round trips to Redis per job (strace sendto): "
                  f"{sum(trips.values()) / args.jobs:.2f} (all its socket writes: "
                  f"{sends / args.jobs:.1f}); by first command:")
            for name, count in trips.most_common():
                print(f"    {name} {count / args.jobs:.2f}")


def report(jobs: int, elapsed: float, before: dict[str, int], after: dict[str, int],
           counts: collections.Counter[tuple[int, str]], worker_ports: set[int]) -> None:
    total = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    total.pop("monitor", None)
    total.pop("info", None)
    worker: collections.Counter[str] = collections.Counter()
    lua: collections.Counter[str] = collections.Counter()
    for (port, name), n in counts.items():
        if port in worker_ports:
            worker[name] += n
        elif port == 0:  # MONITOR names a script's own calls' client "lua"
            lua[name] += n
    print(f"{jobs} chat jobs in {elapsed:.1f} s ({jobs / elapsed:.0f} jobs/s)")
    print("| command | all clients / job | of which inside scripts | sent by the worker / job |")
    print("| --- | --- | --- | --- |")
    for name in sorted(total, key=lambda k: (-worker.get(k, 0), -total[k])):
        if total[name]:
            print(f"| {name} | {total[name] / jobs:.2f} | {lua.get(name, 0) / jobs:.2f} | "
                  f"{worker.get(name, 0) / jobs:.2f} |")
    print(f"| **all** | {sum(total.values()) / jobs:.2f} | {sum(lua.values()) / jobs:.2f} | "
          f"{sum(worker.values()) / jobs:.2f} |")


if __name__ == "__main__":
    from ops.benchlib.entry import run

    raise SystemExit(run(main))
