"""Embeddings: dimension, unit norm, determinism, and the shared-words similarity rule."""

from __future__ import annotations

import math

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
