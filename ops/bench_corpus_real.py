"""Corpus embedding on a real embedding model: the pool vs direct SDK `embed()`.

`embed_corpus` through the pool (real Redis, a real `celery -A workers worker`, chunking,
dispatch and output included) against the best direct-SDK baseline on the same chunk texts
(one `lmstudio.Client`, N threads calling `embed(text)`, the best N every round), both on
the simulator's real engine (`python -m simulator --engine real`: multilingual-e5-small,
384-d, 512-token context, running on this machine's CPU), in alternating rounds; the ratio
is the median of the rounds' ratios. Goal: >= 0.9x.

Unlike `ops/bench_corpus.py`'s profiles, LM Studio's time here is a real model's: the pool
and the direct script share the CPU with it, so on a 2-core machine the figure mixes the
pool's overhead with the CPU it takes from the model; measure on a quiet machine. The
corpus is Celery's docs (.rst files in order, cut at --corpus-mb; fetched at install time
by ops/setup.d/celery-docs), else generated prose. Chunks: 512 tokens, no overlap.

    nice .venv/bin/python ops/bench_corpus_real.py [--quick] [--corpus-mb MB] [--rounds N]
        [--engine-threads N] [--direct-threads 1 2 4]

--quick: 0.03 MB, one round (proves the run works; about a minute). Default: 0.5 MB, 3.
Needs the local models (ops/setup.d/local-models).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops import bench_corpus  # noqa: E402 - after the path is set
from simulator.real_models import EMBED_KEY, missing_reason  # noqa: E402

CELERY_DOCS = Path(sys.prefix) / "lmq-data" / "celery-5.7.0-docs"
GOAL_RATIO = 0.9
CHUNK_TOKENS = 512


def real_corpus(root: Path, size_mb: float) -> Path:
    """Celery's .rst files in path order up to `size_mb` (generated prose without them)."""
    if not (CELERY_DOCS / "index.rst").is_file():
        return bench_corpus.generate_corpus(root, size_mb)
    root.mkdir(parents=True, exist_ok=True)
    budget = int(size_mb * 1024 * 1024)
    for index, path in enumerate(sorted(CELERY_DOCS.rglob("*.rst"))):
        if budget <= 0:
            break
        text = path.read_text(encoding="utf-8", errors="replace")[:budget]
        (root / f"{index:04d}-{path.name}").write_text(text, encoding="utf-8")
        budget -= len(text)
    return root


def measure(corpus_mb: float, rounds: int, engine_threads: int, direct_threads: list[int],
            say: Any = print) -> bench_corpus.Comparison:
    from producers.local_pool import local_pool
    from producers.redis_server import RedisServer
    from simulator.testing import running_simulator

    config = {"engine": "real", "real": {"threads": engine_threads}}
    work = Path(tempfile.mkdtemp(prefix="lmq-bench-corpus-real-"))
    try:
        with RedisServer() as redis, running_simulator(config, in_process=False) as sim, \
                local_pool(redis.url, sim.host, [EMBED_KEY]) as pool:
            corpus = real_corpus(work / "docs", corpus_mb)
            say(f"real engine: {EMBED_KEY}, {engine_threads} thread(s); corpus "
                f"{corpus_mb:g} MB of {'Celery docs' if CELERY_DOCS.is_dir() else 'prose'}, "
                f"{rounds} round(s)")
            return bench_corpus.compare(corpus, work, pool.settings, sim.host, rounds,
                                        direct_threads, model=EMBED_KEY, warm_mb=0.005,
                                        chunk_tokens=CHUNK_TOKENS)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.03 MB, one round")
    parser.add_argument("--corpus-mb", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--engine-threads", type=int, default=1,
                        help="the real engine's CPU threads (as the tests run it)")
    parser.add_argument("--direct-threads", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    reason = missing_reason()
    if reason:
        raise SystemExit(f"bench_corpus_real: no local models: {reason}")
    corpus_mb = args.corpus_mb or (0.03 if args.quick else 0.5)
    rounds = args.rounds or (1 if args.quick else 3)
    found = measure(corpus_mb, rounds, args.engine_threads, args.direct_threads)
    print(f"corpus {corpus_mb:g} MB -> {found.chunks} chunks, {found.tokens:,} tokens")
    print("\n".join(found.lines()))
    print(f"THROUGHPUT [real engine] ratio pool / best direct = {found.ratio:.2f} (median of "
          f"{rounds} round(s); goal >= {GOAL_RATIO})")


if __name__ == "__main__":
    main()
