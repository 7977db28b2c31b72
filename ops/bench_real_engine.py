#!/usr/bin/env python
"""Real-engine benchmark: real SmolLM2-135M tokens through the pool vs direct, same run.

    .venv/bin/python ops/bench_real_engine.py [--jobs 12] [--max-tokens 32]
                                              [--concurrency 2] [--threads 1] [--rounds 6]

Starts a private redis-server and `python -m simulator --engine real` (llama.cpp on the
CPU, `--threads` threads, `--concurrency` slots), one `celery -A workers worker` for the
model (LMQ_SLOTS = `--concurrency`), and measures generated tokens per second (sum of the
predicted tokens in the prediction stats / wall time) of the same chat jobs:

* direct: `respond()` from `--concurrency` threads sharing one lmstudio SDK client;
* pool:   the jobs through Redis and the worker (`JobQueue.submit_many`, results awaited).

Made for a shared machine (other processes' load moves both numbers a lot from one minute
to the next): direct and pool runs alternate for `--rounds` rounds against the same
simulator, the side that goes first alternates too, and the ratio is the median of the
rounds' ratios (as in `ops/bench_pool.py`). Within a round both sides send the same
prompts with the same maxTokens, and the model's seed is the instance's load seed, so both
generate the same tokens (the token counts per side are reported); each round uses fresh
prompts. llama.cpp's cross-slot prompt cache is off for the run (`[real] prompt_cache_mib =
0`): with it, the side that ran second found every prompt already processed and was ~25%
faster (each slot still reuses the prefix it holds, the chat template, on both sides).
Each side runs one warm-up job per round outside its timer, as `ops/bench_pool.py`
does (for the direct side also its `lms.Client` connection and model handle). Also outside
the pool's timer: `JobQueue`'s served-model check. `submit` re-inspects the workers when
its cache is over 5 s old, and that inspect waits its whole 1 s reply timeout; left to
itself it fell inside some timed runs and not others (a ~3.5 s run then took ~4.5 s), so
the benchmark refreshes it just before each pool run and reports its cost apart
(`served-model check`, ~1.0 s): a latency a producer pays on a submit after 5 s without
one, not a throughput cost. Reported per side and round: CPU seconds of llama.cpp's process (the
simulator; over the wall time, the cores it got), of the client side (this process for
direct; the worker and this process for the pool) and of redis, so CPU the pool's own
processes take from llama.cpp shows; and the share of the slots' time holding a
prediction (from the simulator's channels), which shows the pool's hand-off delays apart
from how much CPU the machine left to llama.cpp.
Goal: pool / direct >= 0.9 tokens per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.benchlib.cpu import cpu_s  # noqa: E402
from producers.job_queue import JobQueue  # noqa: E402
from producers.local_pool import local_pool  # noqa: E402
from producers.redis_server import RedisServer  # noqa: E402
from simulator.admin import SimulatorAdmin  # noqa: E402
from simulator.real_models import LLM_KEY, missing_reason  # noqa: E402
from simulator.testing import running_simulator  # noqa: E402

GOAL_RATIO = 0.9
WARM_UP_TOKENS = 8
Say = Callable[[str], None]
Timed = Callable[[], AbstractContextManager[None]]


@dataclass
class Side:
    """One side's timed run in one round."""

    tokens_per_s: float
    tokens: int
    wall_s: float
    llama_cpu_s: float  # the simulator process (llama.cpp and its event loop)
    client_cpu_s: float  # direct: this process; pool: the worker(s) + this process
    redis_cpu_s: float
    slots_busy: float  # mean share of the simulator's slots holding a prediction

    @property
    def llama_share(self) -> float:
        """Cores llama.cpp's process used over the run: below the thread count, it waited
        (for the CPU, taken by other processes, or for jobs)."""
        return self.llama_cpu_s / self.wall_s


@dataclass
class Round:
    first: str  # "direct" or "pool"
    direct: Side
    pool: Side
    served_check_s: float  # JobQueue's served-model check, done just before the pool run

    @property
    def ratio(self) -> float:
        return self.pool.tokens_per_s / self.direct.tokens_per_s


@dataclass
class Comparison:
    rounds: list[Round] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Median of the rounds' pool / direct ratios."""
        return statistics.median(r.ratio for r in self.rounds)

    def tokens_per_s(self, side: str) -> list[float]:
        return [getattr(r, side).tokens_per_s for r in self.rounds]

    def mean_cpu_s(self, side: str, part: str) -> float:
        return statistics.mean(getattr(getattr(r, side), part) for r in self.rounds)


@dataclass
class Probe:
    """What is read around each timed run: the processes' CPU time (pids) and, from the
    simulator's admin API, when each prediction held a slot."""

    simulator: int
    workers: list[int]
    redis: int
    admin: SimulatorAdmin
    slots: int

    def cpu_s(self) -> dict[str, float]:
        return {"llama": cpu_s(self.simulator), "redis": cpu_s(self.redis),
                "workers": sum(cpu_s(pid) for pid in self.workers), "me": cpu_s(os.getpid())}


def prompts(tag: str, n: int) -> list[str]:
    return [f"In two sentences, describe item {tag}-{i} of a shopping list." for i in range(n)]


def direct_tokens(host: str, texts: list[str], concurrency: int, max_tokens: int,
                  timed: Timed) -> int:
    """Predicted tokens of respond() calls from `concurrency` threads sharing one client;
    `timed()` wraps only the calls (the connection and one warm-up call are outside)."""
    import lmstudio as lms

    config = {"maxTokens": max_tokens}
    with lms.Client(host) as client:
        model = client.llm.model(LLM_KEY)
        model.respond("Say hello.", config={"maxTokens": WARM_UP_TOKENS})
        with timed(), ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(lambda text: model.respond(text, config=config), texts))
    return sum(r.stats.predicted_tokens_count for r in results)


def pool_tokens(queue: JobQueue, texts: list[str], max_tokens: int,
                timed: Timed) -> tuple[int, float]:
    """(predicted tokens, served-model check seconds) of the jobs through the pool;
    `timed()` wraps submit_many and the results. Outside it: one warm-up job, then the
    served-model check, refreshed so that it cannot fall due inside the timed run."""
    queue.chat(LLM_KEY, "Say hello.", config={"max_tokens": WARM_UP_TOKENS}).result(timeout=120)
    started = time.perf_counter()
    queue.served_models(refresh=True)
    served_check_s = time.perf_counter() - started
    with timed():
        handles = queue.submit_many([{"model": LLM_KEY, "messages": text,
                                      "config": {"max_tokens": max_tokens}} for text in texts])
        results = [handle.result(timeout=600) for handle in handles]
    return sum(r.stats.predicted_tokens_count for r in results), served_check_s


class _Meter:
    """Wall time, CPU of the processes and slot occupancy over one `timed()` block."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.wall_s = 0.0
        self.cpu: dict[str, float] = {}
        self.slots_busy = 0.0

    @contextmanager
    def timed(self) -> Iterator[None]:
        self.probe.admin.clear_log()  # also forgets the channels seen so far
        before, started, started_t = self.probe.cpu_s(), time.perf_counter(), time.time()
        yield
        self.wall_s = time.perf_counter() - started
        after = self.probe.cpu_s()
        self.cpu = {part: after[part] - before[part] for part in after}
        held_s = sum(c["closed_t"] - (c["slot_acquired_t"] or c["created_t"])
                     for c in self.probe.admin.channels()
                     if c["endpoint"] == "predict" and c["closed_t"]
                     and c["created_t"] >= started_t)
        self.slots_busy = held_s / (self.wall_s * self.probe.slots)

    def side(self, tokens: int, client_parts: tuple[str, ...]) -> Side:
        return Side(tokens / self.wall_s, tokens, self.wall_s, self.cpu["llama"],
                    sum(self.cpu[part] for part in client_parts), self.cpu["redis"],
                    self.slots_busy)


def one_round(host: str, queue: JobQueue, probe: Probe, args: argparse.Namespace,
              round_no: int) -> Round:
    texts = prompts(f"r{round_no}", args.jobs)  # the same prompts on both sides
    order = ("direct", "pool") if round_no % 2 == 0 else ("pool", "direct")
    sides: dict[str, Side] = {}
    served_check_s = 0.0
    for name in order:
        meter = _Meter(probe)
        if name == "direct":
            tokens = direct_tokens(host, texts, args.concurrency, args.max_tokens, meter.timed)
            sides[name] = meter.side(tokens, ("me",))
        else:
            tokens, served_check_s = pool_tokens(queue, texts, args.max_tokens, meter.timed)
            sides[name] = meter.side(tokens, ("workers", "me"))
    return Round(order[0], sides["direct"], sides["pool"], served_check_s)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12, help="Jobs per round and side.")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=2,
                        help="Simulator slots = direct threads = the worker's LMQ_SLOTS.")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads.")
    parser.add_argument("--rounds", type=int, default=6,
                        help="Alternating direct/pool rounds (even: each side goes first as "
                             "often); the ratio is the median of their ratios.")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    reason = missing_reason()
    if reason:
        sys.exit(f"bench_real_engine: {reason}")
    report(args, measure(args))


def say_now(line: str) -> None:
    print(line, flush=True)


def measure(args: argparse.Namespace, say: Say = say_now) -> Comparison:
    """Alternating direct/pool rounds; `args` as from `parse_args`. Needs the local models
    (`missing_reason()` is None). ops/bench calls this too."""
    config = {"engine": "real", "real": {"threads": args.threads, "prompt_cache_mib": 0},
              "timing": {"parallel_slots": args.concurrency}}
    redis = RedisServer().start()
    try:
        with running_simulator(config, in_process=False) as sim, \
                local_pool(redis.url, sim.host, [LLM_KEY],
                           extra_env={"LMQ_SLOTS": str(args.concurrency)}) as pool:
            workers = [w.process.pid for w in pool.workers]  # type: ignore[union-attr]
            probe = Probe(sim.pid, workers, redis.process.pid,  # type: ignore[union-attr]
                          sim.admin, args.concurrency)
            return run(sim.host, pool.queue, probe, args, say)
    finally:
        redis.stop()


def run(host: str, queue: JobQueue, probe: Probe, args: argparse.Namespace,
        say: Say) -> Comparison:
    result = Comparison()
    for round_no in range(args.rounds):
        result.rounds.append(one_round(host, queue, probe, args, round_no))
        say(describe(round_no, result.rounds[-1]))
    return result


def describe(round_no: int, r: Round) -> str:
    return (f"round {round_no + 1} ({r.first} first): direct {r.direct.tokens_per_s:.1f} "
            f"tok/s ({r.direct.tokens} tokens, {r.direct.wall_s:.2f} s), pool "
            f"{r.pool.tokens_per_s:.1f} tok/s ({r.pool.tokens} tokens, {r.pool.wall_s:.2f} s),"
            f" ratio {r.ratio:.2f}; slots busy {r.direct.slots_busy:.2f}/"
            f"{r.pool.slots_busy:.2f}; CPU s llama.cpp {r.direct.llama_cpu_s:.2f}/"
            f"{r.pool.llama_cpu_s:.2f} (cores {r.direct.llama_share:.2f}/"
            f"{r.pool.llama_share:.2f}), client {r.direct.client_cpu_s:.2f}/"
            f"{r.pool.client_cpu_s:.2f}, redis {r.direct.redis_cpu_s:.2f}/"
            f"{r.pool.redis_cpu_s:.2f} (direct/pool); served-model check "
            f"{r.served_check_s:.2f} s")


def report(args: argparse.Namespace, result: Comparison) -> None:
    ratios = [r.ratio for r in result.rounds]
    print(f"\nreal engine ({LLM_KEY}, {args.threads} llama.cpp thread(s), "
          f"{args.concurrency} slots, {args.jobs} jobs x {args.max_tokens} max tokens, "
          f"{args.rounds} alternating rounds)")
    for side in ("direct", "pool"):
        print(f"{side:7s}: {statistics.median(result.tokens_per_s(side)):.1f} tokens/s "
              f"(median of rounds), client CPU {result.mean_cpu_s(side, 'client_cpu_s'):.2f} "
              f"s/round, llama.cpp CPU {result.mean_cpu_s(side, 'llama_cpu_s'):.2f} s/round")
    print(f"per-round ratios: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"ratio pool/direct = {result.ratio:.2f} (median; range {min(ratios):.2f}-"
          f"{max(ratios):.2f}; goal >= {GOAL_RATIO}) -> "
          f"{'OK' if result.ratio >= GOAL_RATIO else 'BELOW GOAL'}")


if __name__ == "__main__":
    from ops.benchlib.entry import run

    raise SystemExit(run(main))
