"""Throughput of one simulator process driven by the real SDK from other processes.

Starts `python -m simulator` (a subprocess) with every timing delay at zero, then runs
driver processes that use `lmstudio.Client`: streamed predictions (fragments/s) and
`embed` calls (embedString/s). Prints the measured figures and the ratio to the goal.

    .venv/bin/python ops/bench_simulator.py [--seconds 5] [--procs 2] [--threads 4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_FRAGMENTS_PER_S = 2000.0
GOAL_EMBEDS_PER_S = 1000.0
LLM_KEY = "llama-3.2-1b-instruct"
EMBED_KEY = "text-embedding-nomic-embed-text-v1.5"
ZERO_TIMING = {
    "timing": {"prefill_tokens_per_s": 0, "decode_tokens_per_s": 0,
               "embedding_latency_s": 0, "load_delay_s": 0},
    "faults": {"reply_tokens": 200},
}


def _fragments_worker(client, seconds: float, counts: list[int], i: int) -> None:  # type: ignore[no-untyped-def]
    model = client.llm.model(LLM_KEY)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        for _ in model.respond_stream(f"bench {i} {n}"):
            counts[i] += 1
        n += 1


def _embed_worker(client, seconds: float, counts: list[int], i: int) -> None:  # type: ignore[no-untyped-def]
    model = client.embedding.model(EMBED_KEY)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        model.embed(f"benchmark text number {i} {n}")
        counts[i] += 1
        n += 1


def drive(host: str, kind: str, seconds: float, threads: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    import lmstudio as lms

    target = _fragments_worker if kind == "fragments" else _embed_worker
    with lms.Client(host) as client:
        client.llm.list_loaded(), client.embedding.list_loaded()  # warm both namespaces
        counts = [0] * threads
        workers = [threading.Thread(target=target, args=(client, seconds, counts, i))
                   for i in range(threads)]
        started = time.monotonic()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        out.put((sum(counts), time.monotonic() - started))


def measure(host: str, kind: str, seconds: float, procs: int, threads: int) -> float:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    workers = [ctx.Process(target=drive, args=(host, kind, seconds, threads, out))
               for _ in range(procs)]
    for w in workers:
        w.start()
    try:
        results = [out.get(timeout=seconds + 60) for _ in workers]
        for w in workers:
            w.join()
    finally:  # stopped (Ctrl-C, SIGTERM): no driver outlives the benchmark
        for w in workers:
            if w.is_alive():
                w.terminate()
                w.join(timeout=10)
    return sum(n for n, _ in results) / max(elapsed for _, elapsed in results)


def rates(seconds: float, procs: int, threads: int) -> tuple[float, float]:
    """(fragments/s, embedString/s) of a fresh simulator subprocess; ops/bench calls this."""
    from simulator.testing import running_simulator

    with running_simulator(ZERO_TIMING, in_process=False) as sim:
        return (measure(sim.host, "fragments", seconds, procs, threads),
                measure(sim.host, "embeds", seconds, procs, threads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=2, help="driver processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per driver")
    args = parser.parse_args()
    frag_rate, embed_rate = rates(args.seconds, args.procs, args.threads)
    print(f"drivers: {args.procs} processes x {args.threads} threads, {args.seconds:.0f} s each")
    print(f"fragments/s:   {frag_rate:8.0f}  (goal {GOAL_FRAGMENTS_PER_S:.0f}, "
          f"ratio {frag_rate / GOAL_FRAGMENTS_PER_S:.2f})")
    print(f"embedString/s: {embed_rate:8.0f}  (goal {GOAL_EMBEDS_PER_S:.0f}, "
          f"ratio {embed_rate / GOAL_EMBEDS_PER_S:.2f})")


if __name__ == "__main__":
    from ops.benchlib.entry import run

    raise SystemExit(run(main))
