"""The simulator's real engine (issue 10) through the pool: real Redis, real `celery -A
workers worker` processes, the real SDK, and SmolLM2-135M / multilingual-e5-small running
on the CPU inside `python -m simulator` (config `engine = "real"`). Replies are kept short
(max_tokens <= 32, except the one that is cancelled) so this stays within CI time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers import JobCancelledError, JobHandle
from producers.local_pool import LocalPool, local_pool
from producers.redis_server import RedisServer, free_port
from simulator.real_models import EMBED_KEY, LLM_KEY, missing_reason
from tests.integration.corpus_support import lmq
from tests.support.services import missing_service
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DOCS = {
    "zebra.txt": "Zebras migrate across the Serengeti savanna every year, crossing rivers "
                 "full of crocodiles in search of fresh grass.",
    "bread.txt": "To bake sourdough bread, mix flour, water and salt with a starter, let the "
                 "dough rise overnight and bake it in a hot oven.",
    "rust.txt": "The Rust compiler's borrow checker enforces ownership rules so programs "
                "are memory safe without a garbage collector.",
    "volcano.txt": "A volcano erupts when magma from deep inside the Earth rises and escapes "
                   "through the crust as lava, ash and gas.",
    "tax.txt": "Income tax returns must be filed by April; deductions for charitable "
               "donations lower the taxable income.",
}
QUERIES = {
    "which animals cross rivers on the African plains?": "zebra.txt",
    "how do I make a loaf at home?": "bread.txt",
    "memory safety in a programming language": "rust.txt",
}


@pytest.fixture(scope="module")
def installed() -> None:
    reason = missing_reason()
    if reason:
        missing_service(f"the real engine: {reason}")


@pytest.fixture(scope="module")
def real_sim(installed: None) -> Iterator[object]:
    from simulator.testing import running_simulator

    with running_simulator({"engine": "real", "real": {"threads": 1}},
                           in_process=False) as running:
        yield running


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, real_sim: object) -> Iterator[LocalPool]:
    url = redis_server.url.rsplit("/", 1)[0] + "/6"
    with local_pool(url, real_sim.host, [LLM_KEY, EMBED_KEY]) as started:  # type: ignore[attr-defined]
        yield started


def test_chat_job_returns_real_text_and_real_stats(pool: LocalPool, real_sim: object) -> None:
    result = pool.queue.chat(LLM_KEY, "What color is the sky on a clear day?",
                             config={"max_tokens": 24}).result(timeout=180)
    stats = result.stats
    assert result.content.strip() and result.model.model_key == LLM_KEY
    assert 0 < stats.predicted_tokens_count <= 24
    assert stats.stop_reason in ("eosFound", "maxPredictedTokensReached")
    assert stats.tokens_per_second and stats.tokens_per_second > 0
    assert stats.time_to_first_token_s and stats.time_to_first_token_s > 0
    # The prompt is the model's own chat template, counted by its own tokenizer.
    import lmstudio as lms

    with lms.Client(real_sim.host) as client:  # type: ignore[attr-defined]
        llm = client.llm.model(LLM_KEY)
        assert len(llm.tokenize(result.content)) >= 1
        assert stats.prompt_tokens_count > llm.count_tokens(
            "What color is the sky on a clear day?")  # template tokens around it
        assert llm.get_context_length() == 2048


def test_completion_stops_at_max_tokens(pool: LocalPool) -> None:
    result = pool.queue.complete(LLM_KEY, "The three primary colors are",
                                 config={"max_tokens": 8}).result(timeout=180)
    assert result.content.strip()
    assert result.stats.predicted_tokens_count == 8
    assert result.stats.stop_reason == "maxPredictedTokensReached"


def _generating(handle: JobHandle) -> JobHandle:
    wait_until(lambda: (p := handle.progress()) is not None and p.tokens_so_far > 0,
               timeout=120, message=f"job {handle.id} generating")
    return handle


def test_cancel_stops_the_real_generation(pool: LocalPool, real_sim: object) -> None:
    admin = real_sim.admin  # type: ignore[attr-defined]
    since = admin.clear_log()
    handle = _generating(pool.queue.complete(LLM_KEY, "Once upon a time, in a far away land,",
                                             config={"max_tokens": 1500}))
    handle.cancel()
    wait_until(lambda: admin.log(type="channelSend:cancel", since=since), timeout=30,
               message="a cancel message at the simulator")
    with pytest.raises(JobCancelledError) as caught:
        handle.result(timeout=60)
    partial = caught.value.partial
    assert partial is not None and partial["content"]
    assert partial["stats"]["stop_reason"] == "userStopped"
    assert partial["stats"]["predicted_tokens_count"] < 1500
    channel = wait_until(lambda: _closed_predict_channel(admin), timeout=30,
                         message="the cancelled predict channel closed")
    assert channel["fragments_after_cancel"] == 0
    # llama.cpp stopped too: its slots are free, so a short job runs at once afterwards.
    after = pool.queue.complete(LLM_KEY, "Hello", config={"max_tokens": 4}).result(timeout=60)
    assert after.stats.predicted_tokens_count == 4


def _closed_predict_channel(admin: object) -> dict[str, object] | None:
    channels = admin.channels()  # type: ignore[attr-defined]
    items = channels.values() if isinstance(channels, dict) else channels
    cancelled = [c for c in items if c.get("cancel_t") and c.get("closed_t")]
    return cancelled[-1] if cancelled else None


def test_corpus_search_ranks_the_relevant_document_first(pool: LocalPool,
                                                         tmp_path: Path) -> None:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    for name, text in DOCS.items():
        (corpus / name).write_text(text)
    out = tmp_path / "corpus.parquet"
    env = {k: v for k, v in pool.env.items() if k != "LMQ_MODEL"}
    done = lmq("embed-corpus", str(corpus), "--model", EMBED_KEY, "--out", str(out),
               "--no-progress", env=env, timeout_s=240)
    assert "failures: 0 chunks" in done.stdout, done.stdout + done.stderr
    for query, expected in QUERIES.items():
        shown = lmq("search", str(out), query, "--model", EMBED_KEY, "-k", "3", "--json",
                    env=env)
        hits = json.loads(shown.stdout)
        assert os.path.basename(hits[0]["source"].split("#")[0]) == expected, (query, hits)
        assert hits[0]["score"] > hits[1]["score"]


def test_demo_uses_the_real_engine_when_installed(installed: None) -> None:
    """`lmq demo` (what ops/demo runs) on a fresh machine picks the real engine by itself."""
    env = {**os.environ, "LMQ_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
           "LMQ_LMSTUDIO_HOST": f"127.0.0.1:{free_port()}"}
    for name in ("LMQ_RESULT_BACKEND", "LMQ_REDIS_URL", "LMQ_MODEL"):
        env.pop(name, None)
    lmq_bin = str(Path(sys.executable).parent / "lmq")
    done = subprocess.run([lmq_bin, "demo"], env=env, capture_output=True, text=True,
                          timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "with its real engine" in done.stderr
    assert "served by the simulator's real engine" in done.stderr
    for label in (f"== chat ({LLM_KEY})", f"== completion ({LLM_KEY})",
                  f"== embedding ({EMBED_KEY})"):
        assert label in done.stdout
    assert "dimension 384" in done.stdout
