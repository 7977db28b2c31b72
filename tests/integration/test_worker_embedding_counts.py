"""exact_token_counts=False: one LM Studio call per text; bounds in token_counts."""

from __future__ import annotations

import pytest

from tests.integration.test_worker_support import EMBED, client_app, rpc_calls, send
from workers.contract import EmbeddingJob, EmbeddingResult

pytestmark = [pytest.mark.timeout(120)]
TEXTS = ["a short text", "another short text, with punctuation!", "ünïcode text"]


def test_bounds_instead_of_counts(worker_factory, lmq_env, redis_url, simulator):  # type: ignore[no-untyped-def]
    worker_factory(EMBED, lmq_env)
    app = client_app(redis_url)
    exact = EmbeddingResult.model_validate(
        send(app, EmbeddingJob(model=EMBED, texts=TEXTS)).get(timeout=30))
    counted = len(rpc_calls(simulator, "countTokens"))
    bounded = EmbeddingResult.model_validate(
        send(app, EmbeddingJob(model=EMBED, texts=TEXTS, exact_token_counts=False))
        .get(timeout=30))
    assert exact.token_counts_exact and not bounded.token_counts_exact
    assert len(rpc_calls(simulator, "countTokens")) == counted  # no count for these texts
    assert all(b >= e for b, e in zip(bounded.token_counts, exact.token_counts, strict=True))
    assert bounded.vectors == exact.vectors


def test_a_text_whose_bound_exceeds_the_context_is_counted(worker_factory, lmq_env, redis_url,
                                                           simulator):  # type: ignore[no-untyped-def]
    worker_factory(EMBED, lmq_env)
    app = client_app(redis_url)
    long_text = "word " * 600  # ~600 tokens, 3,000 bytes: bound over the 2,048 context
    result = EmbeddingResult.model_validate(send(app, EmbeddingJob(
        model=EMBED, texts=[long_text], exact_token_counts=False)).get(timeout=30))
    calls = rpc_calls(simulator, "countTokens")
    assert result.token_counts_exact and result.token_counts[0] < 2048
    assert any(long_text.strip()[:20] in str(c["msg"]) for c in calls) or len(calls) >= 2
