"""Admission measured against the simulator's LM Studio 0.4 memory model.

Everything runs for real: a private redis-server, `python -m simulator` (subprocess), and
`celery -A workers worker` processes driven through the broker
(`ops/benchlib/admission_workload.py`). The model is loaded with 1024 KV cells, unified,
and 4 parallel predictions (llama.cpp allocates the cells at load; a prediction that finds
none free fails with "failed to find a memory slot"). A "big" job has a 300-token prompt
and max_tokens=200 (~450 cells in use, 500 reserved): two at once, never three. Every reply
is 150 tokens at 100 tokens/s, cut at max_tokens (small jobs: 40).

Workloads (`--jobs`, default 64, sent at once, the big ones spread evenly):

* `small` — max_tokens=40 only. Cells never bind, so its slot utilisation measures
  admission's own overhead.
* `mixed-3/4-big` — 3/4 big, 1/4 small: the issue's mixed flood, and the one that shows
  what admission is for (without it, no-free-cells failures). Cells bind nearly all the
  time: two big jobs fill the cache, so four busy slots are impossible. What it measures is
  how close admission gets to what the cells permit (the bound, below; goal >= 0.9).
* `mixed-1/4-big` — 1/4 big, 3/4 small: cells bind only when two big jobs meet.

Figures (per configuration: medians of `--rounds` runs on one warm worker, with ranges):

* successful jobs/s; with admission off (`LMQ_ADMISSION=false`) the no-free-cells failures;
* raw slot utilisation = busy slot-seconds (slot acquired -> channel closed, from the
  simulator's channel stats) / (slots x span from the first slot acquired to the last
  channel closed);
* the bound the KV cells allow: the shortest makespan any scheduler could reach with the
  jobs' measured busy times under the slot and cell limits (`ops/benchlib/admission_bound.py`,
  a linear program over the mixes of jobs that fit), as a utilisation bound, and the raw
  utilisation as a fraction of it (the goal: >= 0.9, 0 failures). Each job counts at
  prompt (exact, from its stats) + max_tokens: what a scheduler that never lets a
  prediction fail must keep for it, since a reply's length is known only once it ends.
  Also shown, not a goal: the bound "with hindsight", at the cells jobs ended up using
  (prompt + reply). The first version of this benchmark measured against that one (0.76
  of it): on the 3/4-big flood it lets two small jobs run beside two big ones, which
  overflows the cache whenever the big ones write all of their max_tokens. And "reserved":
  at what admission reserves (its local prompt bound for short prompts);
* where the idle slot-time went (`ops/benchlib/admission_gap.py`): cells full for every
  waiting job, a waiting job would have fit (the pool's own overhead), or the tail after
  the last job started (a finite flood's; the bound leaves it out, so it weighs on short
  runs: `--jobs 32` ~0.05, the report's 256 jobs ~0.01);
* lookahead: the 3/4-big flood with the worker's lookahead (one more job taken from the
  broker per job waiting for KV, up to LMQ_ADMISSION_LOOKAHEAD = 24;
  `workers/admission/lookahead.py`) vs without it (`...:la0`, the worker's 6 threads
  only). The broker hands jobs out in order: without it, small jobs that would fit beside
  the running ones wait there behind big ones that hold every thread waiting for cells.
  Also the same workloads on 16 threads (LMQ_CONCURRENCY) vs the worker's own rule
  (LMQ_SLOTS + LMQ_PREFETCH_THREADS = 6, plus the lookahead): more threads hold more jobs
  at all times, ahead of later jobs of other tenants.
* the reservation margin: the same workloads with `LMQ_LOCAL_COUNT_MAX_TOKENS=0` (LM Studio
  counts every prompt exactly, 2 RPCs per job) vs the default local bound.

GGUF: metadata read time for a sparse multi-GB GGUF file (tensor infos, a 128k-token
vocabulary): our header-only reader vs gguf.GGUFReader in the same run (goal < 100 ms).

    .venv/bin/python ops/bench_admission.py [--jobs 64] [--rounds 2] [--gguf-gib 8]
        [--runs mixed-3/4-big:on:auto,mixed-3/4-big:on:8,small:on:auto:exact,
                mixed-3/4-big:on:auto:la0] [--skip-gguf]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops.benchlib.admission_workload import (  # noqa: E402
    DEFAULT_RUNS,
    GIB,
    parse_runs,
    print_workloads,
    workload_results,
)

GOAL_GGUF_MS = 100.0
__all__ = ["GOAL_GGUF_MS", "gguf_results", "workload_results"]


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
    parser.add_argument("--rounds", type=int, default=2, help="runs per workload, one worker")
    parser.add_argument("--runs", type=parse_runs, default=DEFAULT_RUNS,
                        help="workload:on|off:auto|THREADS,... (default: the report's runs)")
    parser.add_argument("--gguf-gib", type=float, default=8.0)
    parser.add_argument("--skip-gguf", action="store_true")
    parser.add_argument("--skip-workloads", action="store_true")
    args = parser.parse_args()
    if not args.skip_gguf:
        bench_gguf(args.gguf_gib)
    if not args.skip_workloads:
        print_workloads(workload_results(args.jobs, args.rounds, args.runs))


if __name__ == "__main__":
    from ops.benchlib.entry import run

    raise SystemExit(run(main))
