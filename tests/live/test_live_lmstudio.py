"""The pool against a real LM Studio (marked `live`; see tests/live/README.md).

Assertions are about shape and behaviour a real model guarantees (non-empty text, stats
present and consistent, cancel stops generation), never about the exact words. The host is
`LMQ_LMSTUDIO_HOST` (`LMQ_LIVE_HOST` wins if set; default localhost:1234); the models are
whatever that LM Studio has (a chat and an embedding model, loaded ones first) unless
`LMQ_LIVE_CHAT_MODEL` / `LMQ_LIVE_EMBED_MODEL` name them. Nothing answering skips the
module; `LMQ_LIVE_SIMULATOR=1` runs it against the simulator instead (checks this code).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import pytest

from producers import JobCancelledError
from producers.lmstudio_host import host_models, lmstudio_answers, pick_models
from producers.local_pool import LocalPool, local_pool
from producers.redis_server import RedisServer
from tests.support.wait import wait_until

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]

HOST = (os.environ.get("LMQ_LIVE_HOST") or os.environ.get("LMQ_LMSTUDIO_HOST")
        or "localhost:1234")
ON_SIMULATOR = os.environ.get("LMQ_LIVE_SIMULATOR") == "1"
CHAT = os.environ.get("LMQ_LIVE_CHAT_MODEL", "")
EMBED = os.environ.get("LMQ_LIVE_EMBED_MODEL", "")


@pytest.fixture(scope="module")
def lmstudio() -> Iterator[tuple[str, Any]]:
    """(host, simulator admin or None): the LM Studio at HOST, or the simulator when asked."""
    if not ON_SIMULATOR:
        if not lmstudio_answers(HOST):
            pytest.skip(f"no LM Studio answers at {HOST} (set LMQ_LMSTUDIO_HOST)")
        yield HOST, None
        return
    from simulator.testing import running_simulator

    with running_simulator(in_process=False) as sim:  # checks this file's own code
        yield sim.host, sim.admin


@pytest.fixture(scope="module")
def models(lmstudio: tuple[str, Any]) -> tuple[str, str]:
    """(chat model, embedding model): named in the environment, else what the host has
    ("" when it has none of that kind: those tests skip)."""
    if CHAT and EMBED:
        return CHAT, EMBED
    chat, embed = pick_models(host_models(lmstudio[0]))
    return CHAT or chat or "", EMBED or embed or ""


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, lmstudio: tuple[str, Any],
         models: tuple[str, str]) -> Iterator[LocalPool]:
    url = redis_server.url.rsplit("/", 1)[0] + "/10"
    with local_pool(url, lmstudio[0], [m for m in models if m]) as started:
        yield started


@pytest.fixture()
def chat_model(models: tuple[str, str]) -> str:
    if not models[0]:
        pytest.skip("the LM Studio host has no chat model")
    return models[0]


@pytest.fixture()
def embed_model(models: tuple[str, str]) -> str:
    if not models[1]:
        pytest.skip("the LM Studio host has no embedding model")
    return models[1]


def test_chat_returns_text_and_consistent_stats(chat_model: str, pool: LocalPool) -> None:
    result = pool.queue.chat(chat_model, "Say hello in five words.",
                             config={"max_tokens": 32, "temperature": 0}).result(timeout=300)
    stats = result.stats
    assert result.content.strip()
    assert stats.predicted_tokens_count and 0 < stats.predicted_tokens_count <= 32
    assert stats.prompt_tokens_count and stats.total_tokens_count == (
        stats.prompt_tokens_count + stats.predicted_tokens_count)
    assert stats.tokens_per_second and stats.tokens_per_second > 0
    assert result.model.model_key == chat_model and result.timing.run_s > 0


def test_completion_respects_max_tokens(chat_model: str, pool: LocalPool) -> None:
    result = pool.queue.complete(chat_model, "The capital of France is",
                                 config={"max_tokens": 5}).result(timeout=300)
    assert result.stats.predicted_tokens_count <= 5
    assert result.stats.stop_reason in {"maxPredictedTokensReached", "eosFound",
                                        "stopStringFound"}


def test_embeddings_are_normalised_vectors_of_one_dimension(embed_model: str,
                                                            pool: LocalPool) -> None:
    result = pool.queue.embed(embed_model, ["a red apple", "a green apple", "tax law"]).result(
        timeout=300)
    assert len(result.vectors) == 3 and {len(v) for v in result.vectors} == {result.dimension}

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / (math.hypot(*a) * math.hypot(*b))

    apples = cosine(result.vectors[0], result.vectors[1])
    assert apples > cosine(result.vectors[0], result.vectors[2])


def test_cancel_stops_a_long_generation(chat_model: str, pool: LocalPool,
                                        lmstudio: tuple[str, Any]) -> None:
    simulator_admin = lmstudio[1]
    if simulator_admin is not None:  # a real model writes long stories by itself
        simulator_admin.set_faults(reply_tokens=2000)
    handle = pool.queue.chat(chat_model, "Write a very long story about the sea.",
                             config={"max_tokens": 2000})
    wait_until(lambda: (p := handle.progress()) is not None and p.tokens_so_far > 0,
               timeout=300, message="the first tokens")
    handle.cancel()
    with pytest.raises(JobCancelledError) as cancelled:
        handle.result(timeout=120)
    partial = cancelled.value.partial
    assert partial is not None and partial["stats"]["stop_reason"] == "userStopped"
    assert partial["stats"]["predicted_tokens_count"] < 2000
    assert handle.status() == "REVOKED"
