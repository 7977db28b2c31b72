"""GPU-memory-aware admission, measured against the simulator's VRAM model.

Everything runs for real: a private redis-server, `python -m simulator` (subprocess), and
`celery -A workers worker` processes driven through the broker. Parts:

1. mixed workload (3/4 big jobs: max_tokens=3000, ~94 MiB of KV; 1/4 small:
   max_tokens=100) on a
   GPU with room for two big jobs: throughput with admission vs without (LMQ_ADMISSION=
   false), counting the out-of-memory failures without;
2. slot utilisation with admission = busy slot-seconds (slot acquired -> channel closed,
   from the simulator's channel stats) / (slots x span from the first slot acquired to the
   last channel closed); measured on a small-jobs workload (memory not binding: the goal,
   >= 0.85, measures admission's own overhead) and on the mixed one (memory binding);
3. GGUF metadata read time for a sparse multi-GB GGUF file (tensor infos, a 128k-token
   vocabulary): our header-only reader vs gguf.GGUFReader in the same run (goal < 100 ms).

    .venv/bin/python ops/bench_admission.py [--jobs 64] [--gguf-gib 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celery import Celery  # noqa: E402

from producers.redis_server import RedisServer  # noqa: E402
from producers.worker_process import WorkerProcess  # noqa: E402
from workers.celery_config import celery_config  # noqa: E402
from workers.contract import TASK_CHAT, ChatJob, queue_name  # noqa: E402
from workers.settings import Settings  # noqa: E402

LLM = "llama-3.2-1b-instruct"
MIB, GIB = 1024**2, 1024**3
WEIGHTS_BYTES = 807_694_464
KV_ROOM_BYTES = 200 * MIB  # two big jobs at once
SLOTS = 4
GOAL_UTILISATION = 0.85
GOAL_GGUF_MS = 100.0
SIM_CONFIG = {
    "gpu": {"vram_bytes": WEIGHTS_BYTES + KV_ROOM_BYTES},
    "timing": {"decode_tokens_per_s": 100, "reply_min_tokens": 10, "reply_max_tokens": 30,
               "parallel_slots": SLOTS},
    "models": {"text-embedding-nomic-embed-text-v1.5": {"loaded": False}},
}


def worker_env(redis_url: str, host: str, admission: bool, threads: int) -> dict[str, str]:
    return {"LMQ_CONCURRENCY": str(threads),
            "LMQ_BROKER_URL": redis_url, "LMQ_RESULT_BACKEND": redis_url,
            "LMQ_LMSTUDIO_HOST": host, "LMQ_GPU_MEMORY": str(WEIGHTS_BYTES + KV_ROOM_BYTES),
            "LMQ_GPU_RESERVE": "0", "LMQ_SLOTS": str(SLOTS),
            "LMQ_ADMISSION": "true" if admission else "false", "PYTHONUNBUFFERED": "1"}


def start_worker(app: Celery, env: dict[str, str]) -> WorkerProcess:
    worker = WorkerProcess(LLM, env, name=f"bench-{uuid.uuid4().hex[:6]}").start()
    deadline = time.monotonic() + 90
    while not any(worker.hostname in r for r in app.control.ping([worker.hostname], 0.5)):
        if not worker.is_running() or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{worker.log_tail()}")
    return worker


def jobs(count: int, big_share: float) -> list[dict[str, Any]]:
    """`count` chat jobs, a `big_share` fraction of them big, spread evenly."""
    out = []
    for i in range(count):
        big = int((i + 1) * big_share) > int(i * big_share)
        job = ChatJob(model=LLM, config={"max_tokens": 3000 if big else 100},
                      messages=[{"role": "user", "content": f"Tell me about item {i}."}])
        out.append({**job.model_dump(mode="json"), "submitted_at": time.time()})
    return out


def run_workload(app: Celery, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    started = time.monotonic()
    handles = [app.send_task(TASK_CHAT, args=[p], queue=queue_name(LLM)) for p in payloads]
    ok = oom = other = 0
    for handle in handles:
        handle.get(timeout=300, propagate=False)
        if handle.successful():
            ok += 1
        elif "out of memory" in str(handle.result):
            oom += 1
        else:
            other += 1
    elapsed_s = time.monotonic() - started
    return {"jobs": len(payloads), "ok": ok, "oom": oom, "other": other,
            "elapsed_s": elapsed_s, "ok_per_s": ok / elapsed_s}


def slot_utilisation(channels: list[dict[str, Any]]) -> tuple[float, float]:
    """(busy slot-time / (slots x span), mean concurrent predictions)."""
    spans = [(c["slot_acquired_t"], c["closed_t"]) for c in channels
             if c["endpoint"] == "predict" and c["slot_acquired_t"] and c["closed_t"]]
    if not spans:
        return 0.0, 0.0
    busy_s = sum(end - start for start, end in spans)
    window_s = max(end for _, end in spans) - min(start for start, _ in spans)
    return busy_s / (SLOTS * window_s), busy_s / window_s


def measure(app: Celery, sim: Any, env: dict[str, str], payloads: list[dict[str, Any]]
            ) -> dict[str, Any]:
    worker = start_worker(app, env)
    try:
        sim.admin.clear_log()
        result = run_workload(app, payloads)
        result["utilisation"], result["concurrency"] = slot_utilisation(sim.admin.channels())
        return result
    finally:
        worker.stop()


def workload_results(count: int) -> dict[tuple[str, bool, int], dict[str, Any]]:
    """Every workload run, keyed by (workload, admission, worker threads); used by ops/bench."""
    from simulator.testing import running_simulator

    with ExitStack() as stack:
        redis_server = RedisServer().start()
        stack.callback(redis_server.stop)
        sim = stack.enter_context(running_simulator(SIM_CONFIG, in_process=False))
        app = Celery("bench-admission")
        app.conf.update(celery_config(Settings(broker_url=redis_server.url,
                                               result_backend=redis_server.url)))
        runs = {  # (workload, admission, worker threads)
            ("mixed", True, SLOTS): jobs(count, big_share=0.75),
            ("mixed", False, SLOTS): jobs(count, big_share=0.75),
            ("mixed", True, 2 * SLOTS): jobs(count, big_share=0.75),
            ("small", True, SLOTS): jobs(count, big_share=0.0),
        }
        results = {key: measure(app, sim, worker_env(redis_server.url, sim.host, key[1],
                                                     key[2]), p)
                   for key, p in runs.items()}
        app.close()
    return results


def bench_workloads(count: int) -> None:
    print_workloads(workload_results(count))


def print_workloads(results: dict[tuple[str, bool, int], dict[str, Any]]) -> None:
    print(f"{'workload':<8} {'admission':<9} {'threads':>7} {'jobs':>5} {'ok':>5} {'oom':>5} "
          f"{'other':>5} {'wall s':>7} {'ok/s':>7} {'slot util':>9} {'mean conc':>9}")
    for (name, admission, threads), r in results.items():
        print(f"{name:<8} {'on' if admission else 'off':<9} {threads:>7} {r['jobs']:>5} "
              f"{r['ok']:>5} "
              f"{r['oom']:>5} {r['other']:>5} {r['elapsed_s']:>7.2f} {r['ok_per_s']:>7.2f} "
              f"{r['utilisation']:>9.2f} {r['concurrency']:>9.2f}")
    on, off = results[("mixed", True, SLOTS)], results[("mixed", False, SLOTS)]
    print(f"mixed: successful jobs/s with admission / without = "
          f"{on['ok_per_s'] / off['ok_per_s']:.2f} (without: {off['oom']} of {off['jobs']} "
          "failed out of memory)")
    small = results[("small", True, SLOTS)]["utilisation"]
    print(f"slot utilisation with admission, small jobs: {small:.2f} "
          f"(goal {GOAL_UTILISATION}: {small / GOAL_UTILISATION:.2f} of goal)")


def write_sparse_gguf(path: Path, size_gib: float, vocab: int = 128_256) -> None:
    """A llama-shaped GGUF file: full header, tensor infos, sparse (unwritten) data."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(32)
    writer.add_context_length(131072)
    writer.add_embedding_length(4096)
    writer.add_head_count(32)
    writer.add_head_count_kv(8)
    writer.add_token_list([f"token-{i}" for i in range(vocab)])
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([1] * vocab)
    writer.add_token_merges([f"t{i} k{i}" for i in range(vocab * 2)])
    per_tensor = int(size_gib * GIB / (32 * 9)) // 32 * 32  # aligned: no padding between
    for layer in range(32):
        for name in ("q", "k", "v", "o", "gate", "up", "down", "n1", "n2"):
            writer.add_tensor_info(f"blk.{layer}.{name}.weight", [per_tensor], np.dtype(np.uint8),
                                   per_tensor, raw_dtype=gguf.GGMLQuantizationType.I8)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    data_start = -(-os.path.getsize(path) // 32) * 32  # tensor data is 32-byte aligned
    with open(path, "r+b") as file:
        file.truncate(data_start + 32 * 9 * per_tensor)  # sparse: the data is never written


def time_ms(fn: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def gguf_results(size_gib: float) -> dict[str, Any]:
    """Read times (ms, per repeat) of a sparse GGUF file; used by ops/bench and bench_gguf."""
    import gguf

    from workers.admission.gguf_kv import read_kv_shape, read_metadata

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sparse.gguf"
        write_sparse_gguf(path, size_gib)
        ours = time_ms(lambda: read_kv_shape(path), 5)
        full = time_ms(lambda: read_metadata(path), 5)
        theirs = time_ms(lambda: gguf.GGUFReader(str(path)), 3)
        shape = read_kv_shape(path)
        size = os.path.getsize(path)
        used = os.stat(path).st_blocks * 512
    return {"ours_ms": ours, "full_ms": full, "theirs_ms": theirs, "shape": shape,
            "size": size, "used": used}


def bench_gguf(size_gib: float) -> None:
    r = gguf_results(size_gib)
    ours, full, theirs, shape, size, used = (r[k] for k in ("ours_ms", "full_ms", "theirs_ms",
                                                           "shape", "size", "used"))
    print(f"GGUF file {size / GIB:.1f} GiB apparent ({used / 2**20:.1f} MiB on disk, "
          f"{len(shape.kv_heads_per_layer)} layers, {shape.kv_bytes_per_token():,} B/token)")
    print(f"header-only read: first {ours[0]:.1f} ms, median {statistics.median(ours):.1f} ms "
          f"(goal {GOAL_GGUF_MS:.0f} ms: {statistics.median(ours) / GOAL_GGUF_MS:.2f} of goal); "
          f"gguf.GGUFReader median {statistics.median(theirs):.1f} ms; ratio reader/ours "
          f"{statistics.median(theirs) / statistics.median(ours):.1f}x")
    print(f"all KV pairs (tokenizer arrays walked too): median {statistics.median(full):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--gguf-gib", type=float, default=8.0)
    parser.add_argument("--skip-workloads", action="store_true")
    args = parser.parse_args()
    bench_gguf(args.gguf_gib)
    if not args.skip_workloads:
        bench_workloads(args.jobs)


if __name__ == "__main__":
    main()
