"""A text as long as the context by LM Studio's count is longer than the context as LM Studio
embeds it: real Redis, a real `celery -A workers worker`, the CLI as a subprocess, the SDK.

countTokens counts the text alone; LM Studio's llama.cpp engine embeds it with the model's
start and end tokens ([CLS] ... [SEP]) and cuts an input over the context down to the
context, with a warning in its log and no error (workers.contract, EMBEDDING_SPECIAL_TOKENS,
names the sources). The simulator does the same; the pool refuses such a text rather than
return a vector of part of it, and the corpus chunker never makes one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.corpus_support import EMBED, lmq, rows

pytestmark = [pytest.mark.timeout(240)]

CONTEXT = 128
WORDS = [f"word{i}" for i in range(CONTEXT)]
AT_CONTEXT = " ".join(WORDS)  # CONTEXT tokens by countTokens, CONTEXT + 2 embedded
REFUSED = (f"has {CONTEXT} tokens, over the context length {CONTEXT} of {EMBED} once the model "
           "adds its 2 special tokens")


@pytest.fixture()
def small_context(simulator: Any) -> Any:
    import lmstudio as lms

    with lms.Client(simulator.host) as client:
        client.embedding.unload(EMBED)
        client.embedding.load_new_instance(EMBED, config={"contextLength": CONTEXT})
    return simulator


def _truncations(simulator: Any, since: float) -> list[dict[str, Any]]:
    return [e["msg"] for e in simulator.admin.log(since=since, type="embeddingTruncated")]


def test_the_simulator_embeds_a_text_over_the_context_truncated_like_lm_studio(
        small_context: Any) -> None:
    import lmstudio as lms

    sim = small_context
    with lms.Client(sim.host) as client:
        model = client.embedding.model(EMBED)
        assert model.count_tokens(AT_CONTEXT) == CONTEXT
        assert len(model.tokenize(AT_CONTEXT)) == CONTEXT + 2  # [CLS] and [SEP]
        since = sim.admin.clear_log()
        whole = model.embed(AT_CONTEXT)
        fits = model.embed(" ".join(WORDS[:CONTEXT - 2]))  # CONTEXT with its two
        assert _truncations(sim, since) == [{
            "type": "embeddingTruncated", "identifier": EMBED, "tokens": CONTEXT + 2,
            "contextLength": CONTEXT,
            "warning": f"Number of tokens in input string ({CONTEXT + 2}) exceeds model "
                       f"context length ({CONTEXT}). Truncating to {CONTEXT} tokens."}]
        # what was embedded: [CLS] and the first CONTEXT - 1 words; the last word is lost
        assert whole == model.embed(" ".join(WORDS[:CONTEXT - 1]))
        assert whole != fits


def test_the_pool_refuses_a_text_the_engine_would_truncate(
        small_context: Any, worker_factory: Any, lmq_env: dict[str, str]) -> None:
    import lmstudio as lms

    from producers.job_queue import JobQueue
    from workers.contract import EmbeddingJob
    from workers.error import ContextOverflowError
    from workers.settings import Settings

    worker_factory(EMBED, lmq_env)
    settings = Settings(broker_url=lmq_env["LMQ_BROKER_URL"],
                        result_backend=lmq_env["LMQ_RESULT_BACKEND"],
                        lmstudio_host=lmq_env["LMQ_LMSTUDIO_HOST"])
    fits = " ".join(WORDS[:CONTEXT - 2])
    with JobQueue(settings) as queue:
        for job in (EmbeddingJob(model=EMBED, texts=[AT_CONTEXT]),  # counted by the worker
                    EmbeddingJob(model=EMBED, texts=[AT_CONTEXT], exact_token_counts=False),
                    EmbeddingJob(model=EMBED, texts=[AT_CONTEXT], token_counts=[CONTEXT])):
            with pytest.raises(ContextOverflowError, match=REFUSED):
                queue.submit(job).result(timeout=30)
        embedded = queue.embed(EMBED, [fits]).result(timeout=30)
    with lms.Client(small_context.host) as client:
        assert embedded.vectors == [client.embedding.model(EMBED).embed(fits)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("exact", [False, True], ids=["calibrated", "exact"])
def test_every_chunk_of_a_text_at_the_context_embeds_whole(
        small_context: Any, worker_factory: Any, lmq_env: dict[str, str], tmp_path: Path,
        exact: bool) -> None:
    import lmstudio as lms

    sim = small_context
    worker_factory(EMBED, lmq_env)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # one paragraph of CONTEXT tokens, and one line of them with no space to cut at
    (corpus / "doc.txt").write_text(f"{AT_CONTEXT}\n\n{'-'.join(WORDS)}\n")
    out = tmp_path / "c.parquet"
    since = sim.admin.clear_log()
    done = lmq("embed-corpus", str(corpus), "--model", EMBED, "--out", str(out),
               "--chunk-tokens", "200", "--no-progress", *(["--exact-chunks"] * exact),
               env=lmq_env)
    assert "failures: 0 chunks" in done.stdout, done.stdout
    table = rows(out)
    assert len(table) >= 4  # each of the two split
    assert _truncations(sim, since) == []  # nothing was cut by the engine
    with lms.Client(sim.host) as client:
        model = client.embedding.model(EMBED)
        for row in table:
            text = str(row["text"])
            assert len(model.tokenize(text)) <= CONTEXT  # with its start and end tokens
            assert row["vector"] == pytest.approx(model.embed(text), abs=1e-6)
    assert _truncations(sim, since) == []
