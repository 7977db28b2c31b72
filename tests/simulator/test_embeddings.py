"""Embeddings: dimension, unit norm, determinism, and the shared-words similarity rule."""

from __future__ import annotations

import asyncio
import math
import time

import lmstudio as lms
import pytest

from tests.simulator.conftest import EMBED_KEY

pytestmark = pytest.mark.timeout(30)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_shape_norm_and_similarity(client: lms.Client) -> None:
    model = client.embedding.model(EMBED_KEY)
    cat, kitten, car = model.embed(["the cat sat", "a cat napped", "engine oil change"])
    assert len(cat) == 768
    assert math.isclose(_dot(cat, cat), 1.0, rel_tol=1e-9)
    assert _dot(cat, kitten) > _dot(cat, car)
    assert model.embed("the cat sat") == cat
    assert model.count_tokens("the cat sat") == 3


def test_embedding_latency_and_parallelism(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    sim = simulator_factory({"timing": {"embedding_latency_s": 0.1, "embedding_parallel": 2}})

    async def main() -> float:
        async with lms.AsyncClient(sim.host) as client:
            model = await client.embedding.model(EMBED_KEY)
            started = time.monotonic()
            await asyncio.gather(*(model.embed(f"text {i}") for i in range(4)))
            return time.monotonic() - started

    assert asyncio.run(main()) >= 0.2  # 4 calls, 2 at a time, 0.1 s each


def test_embedding_tokens_per_s_paces_by_the_input_length(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    sim = simulator_factory({"timing": {"embedding_latency_s": 0.01,
                                        "embedding_tokens_per_s": 1000.0}})
    short, long = "one two", " ".join(f"word{i}" for i in range(400))

    def seconds(model: lms.EmbeddingModel, text: str, tries: int = 1) -> float:
        """The fastest of `tries` calls: a shared machine only ever adds time."""
        best = float("inf")
        for _ in range(tries):
            started = time.monotonic()
            model.embed(text)
            best = min(best, time.monotonic() - started)
        return best

    def gap(model: lms.EmbeddingModel) -> float:
        return seconds(model, long, 2) - seconds(model, short, 3)

    with lms.Client(sim.host) as client:
        model = client.embedding.model(EMBED_KEY)
        extra = model.count_tokens(long) - model.count_tokens(short)  # the engine's own count
        assert extra == 398
        model.embed(short)  # warm: connection and model handle
        assert 0.8 * extra / 1000 <= gap(model) <= extra / 1000 + 0.5
        # settable at run time, like the other timing fields; 0 turns the pacing off
        assert sim.admin.set_timing(embedding_tokens_per_s=2000)["timing"][
            "embedding_tokens_per_s"] == 2000
        assert 0.8 * extra / 2000 <= gap(model) <= extra / 2000 + 0.5
        sim.admin.set_timing(embedding_tokens_per_s=0)
        assert seconds(model, long) < extra / 1000 - 0.1
