"""`lmq embed-corpus` on real text with a real 512-token embedding model (issue 23): the
simulator's real engine (multilingual-e5-small, its own tokenizer), real Redis, a real
`celery -A workers worker`, the CLI as a subprocess.

Dense text (long markup lines, tables, code, URLs, base64, CJK without spaces) must chunk
within the model's context and embed without a failed chunk; an interrupted run resumed
gives the same rows; a search over Celery's own docs finds the workers guide. Celery's
docs are fetched at install time (ops/setup.d/celery-docs): without them that test skips
(fails under CI=true)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producers.local_pool import LocalPool, local_pool
from producers.redis_server import RedisServer
from simulator.real_models import EMBED_KEY, missing_reason
from tests.integration.corpus_support import (
    CELERY_DOCS,
    lmq,
    lmq_popen,
    make_hard_corpus,
    rows,
)
from tests.support.services import missing_service
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def real_sim() -> Iterator[object]:
    reason = missing_reason()
    if reason:
        missing_service(f"the real engine: {reason}")
    from simulator.testing import running_simulator

    with running_simulator({"engine": "real", "real": {"threads": 1}},
                           in_process=False) as running:
        yield running


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, real_sim: object) -> Iterator[LocalPool]:
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    with local_pool(url, real_sim.host, [EMBED_KEY]) as started:  # type: ignore[attr-defined]
        yield started


@pytest.fixture(scope="module")
def env(pool: LocalPool) -> dict[str, str]:
    return {k: v for k, v in pool.env.items() if k != "LMQ_MODEL"}


def embed_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["embed-corpus", str(corpus), "--model", EMBED_KEY, "--out", str(out),
            "--no-progress", *extra]


def test_dense_real_text_fits_the_context_and_embeds_without_failures(
        pool: LocalPool, env: dict[str, str], real_sim: object, tmp_path: Path) -> None:
    corpus = make_hard_corpus(tmp_path)
    out = tmp_path / "hard.parquet"
    done = lmq(*embed_args(corpus, out), env=env, timeout_s=500)
    assert done.returncode == 0 and "failures: 0 chunks" in done.stdout, done.stderr
    table = rows(out)
    assert {Path(str(r["source"])).name for r in table} == {"index.rst", "notes.md", "cjk.txt"}
    import lmstudio as lms

    with lms.Client(real_sim.host) as client:  # type: ignore[attr-defined]
        model = client.embedding.model(EMBED_KEY)
        context = model.get_context_length()
        counts = [model.count_tokens(str(r["text"])) for r in table]
    # the model's own tokenizer, and room for the [CLS] and [SEP] the engine adds
    assert context == 512 and max(counts) <= context - 2
    assert sum(c > context // 2 for c in counts) > len(counts) // 2  # chunks are not crumbs
    for row in table:  # every chunk is its exact span of the source
        source = Path(str(row["source"])).read_text(encoding="utf-8")
        assert source[row["start"] : row["end"]] == row["text"]  # type: ignore[misc]
        assert len(row["vector"]) == 384  # type: ignore[arg-type]


def _at_context(model: Any) -> str:
    """Distinct words, then one-letter ones, to exactly the model's context by countTokens
    (the text alone). Distinct: the corpus keeps one of equal chunks."""
    context = int(model.get_context_length())
    per_100 = model.count_tokens(" ".join(f"w{i}" for i in range(100))) / 100
    words = [f"w{i}" for i in range(int((context - 20) / per_100))]
    for _ in range(200):
        tokens = model.count_tokens(" ".join(words))
        if tokens == context:
            return " ".join(words)
        words = [*words, "a"] if tokens < context else words[:-1]
    raise AssertionError("no text of exactly the context's tokens")


def test_a_text_at_the_context_is_truncated_by_the_engine_refused_by_the_pool_and_chunked(
        pool: LocalPool, env: dict[str, str], real_sim: Any, tmp_path: Path) -> None:
    """At LM Studio, a text as long as the context by countTokens is 2 tokens over it as
    embedded (its [CLS] and [SEP]) and embedded truncated; the pool refuses it and the
    chunker cuts it into chunks that embed whole (workers.contract, EMBEDDING_SPECIAL_TOKENS)."""
    import lmstudio as lms

    from workers.error import ContextOverflowError

    with lms.Client(real_sim.host) as client:
        model = client.embedding.model(EMBED_KEY)
        text = _at_context(model)
        assert len(model.tokenize(text)) == 514
        since = real_sim.admin.clear_log()
        model.embed(text)
    (cut,) = [e["msg"] for e in real_sim.admin.log(since=since, type="embeddingTruncated")]
    assert (cut["tokens"], cut["contextLength"]) == (514, 512)

    refused = f"has 512 tokens, over the context length 512 of {EMBED_KEY} once the model adds"
    with pytest.raises(ContextOverflowError, match=refused):
        pool.queue.embed(EMBED_KEY, [text]).result(timeout=120)

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "doc.txt").write_text(text + "\n")
    out = tmp_path / "at-context.parquet"
    since = real_sim.admin.clear_log()
    done = lmq(*embed_args(tmp_path / "corpus", out), env=env, timeout_s=300)
    assert "failures: 0 chunks" in done.stdout, done.stdout + done.stderr
    assert real_sim.admin.log(since=since, type="embeddingTruncated") == []
    table = rows(out)
    assert len(table) >= 2 and " ".join(str(r["text"]) for r in table).split() == text.split()


def test_interrupted_run_resumes_to_the_same_rows(env: dict[str, str], tmp_path: Path
                                                   ) -> None:
    corpus = make_hard_corpus(tmp_path)
    small_jobs = ("--job-tokens", "1500", "--max-in-flight", "1")
    whole = tmp_path / "whole.parquet"
    lmq(*embed_args(corpus, whole, *small_jobs), env=env, timeout_s=500)

    out = tmp_path / "resumed.parquet"
    parts = Path(f"{out}.lmq-state") / "parts"
    run = lmq_popen(*embed_args(corpus, out, *small_jobs), env=env)
    wait_until(lambda: parts.exists() and len(list(parts.glob("*.arrow"))) >= 2,
               timeout=300, message="two part files")
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130 and "--resume" in stderr and "Traceback" not in stderr
    resumed = lmq(*embed_args(corpus, out, *small_jobs), "--resume", env=env, timeout_s=500)
    assert "failures: 0 chunks" in resumed.stdout
    assert int(resumed.stdout.split("embedded now, ")[1].split(" from")[0]) > 0
    assert rows(out) == rows(whole)  # row by row, vectors included


@pytest.mark.timeout(900)  # ~560 KB through a CPU model: 580 s was too short at load 8-10
def test_search_on_celerys_docs_finds_the_workers_guide(env: dict[str, str], tmp_path: Path
                                                       ) -> None:
    if not (CELERY_DOCS / "index.rst").is_file():
        missing_service(f"Celery's docs are not at {CELERY_DOCS}: run ops/setup.d/celery-docs")
    out = tmp_path / "celery.parquet"
    # The user guide (its 20 pages: calling, canvas, monitoring, tasks, workers, ...), where
    # revoking, terminating and signals are discussed on several pages.
    done = lmq(*embed_args(CELERY_DOCS / "userguide", out), env=env, timeout_s=880)
    assert "failures: 0 chunks" in done.stdout, done.stdout + done.stderr
    found = lmq("search", str(out), "revoke a running task terminate signal", "--model",
                EMBED_KEY, "-k", "5", env=env)
    sources = [line.split()[2] for line in found.stdout.splitlines() if line[:1].isdigit()]
    assert len(sources) == 5, found.stdout
    assert any(s.endswith("userguide/workers.rst") for s in sources), found.stdout

