"""The real engine's protocol details with the real SDK (issue 10): tokenizer, stop strings,
the tool-call and JSON fallbacks, E5 prefixes. One real simulator (subprocess) per module."""

from __future__ import annotations

import json
from collections.abc import Iterator

import lmstudio as lms
import numpy as np
import pytest

from simulator.real_models import EMBED_KEY, LLM_KEY, missing_reason
from simulator.testing import running_simulator
from tests.support.services import missing_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def client() -> Iterator[lms.Client]:
    reason = missing_reason()
    if reason:
        missing_service(f"the real engine: {reason}")
    with running_simulator({"engine": "real"}, in_process=False) as sim, \
            lms.Client(sim.host) as connected:
        yield connected


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def test_catalog_serves_the_real_models(client: lms.Client) -> None:
    downloaded = {m.model_key: m for m in client.list_downloaded_models()}
    assert set(downloaded) == {LLM_KEY, EMBED_KEY}
    info = client.llm.model(LLM_KEY).get_info()
    assert info.path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and info.size_bytes > 90e6


def test_tokenizer_is_the_models(client: lms.Client) -> None:
    model = client.llm.model(LLM_KEY)
    ids = model.tokenize("Hello world")
    assert model.count_tokens("Hello world") == len(ids) == 2
    assert all(isinstance(i, int) and 0 <= i < 49152 for i in ids)


def test_stop_string_ends_the_real_generation(client: lms.Client) -> None:
    result = client.llm.model(LLM_KEY).complete(
        "1, 2, 3, 4, 5,", config={"maxTokens": 40, "stopStrings": [","]})
    assert "," not in result.content and result.stats.stop_reason == "stopStringFound"


def test_tool_call_falls_back_to_the_documented_rule(client: lms.Client) -> None:
    model = client.llm.model(LLM_KEY)
    messages: list[lms.AnyChatMessage] = []
    model.act("Please add 2 and 3", [add], on_message=messages.append,
              config={"maxTokens": 24})
    results = [m for m in messages if isinstance(m, lms.ToolResultMessage)]
    assert results and results[0].content[0].content == "5"
    assert isinstance(messages[-1], lms.AssistantResponse)  # the real model's answer


def test_structured_output_is_real_constrained_json(client: lms.Client) -> None:
    schema = {"type": "object", "properties": {"color": {"type": "string"}},
              "required": ["color"], "additionalProperties": False}
    result = client.llm.model(LLM_KEY).respond(
        "Name a color.", response_format=schema, config={"maxTokens": 40})
    assert result.stats.stop_reason == "eosFound"
    assert isinstance(json.loads(result.content)["color"], str)


def test_embeddings_are_real_and_prefix_aware(client: lms.Client) -> None:
    model = client.embedding.model(EMBED_KEY)
    query = np.array(model.embed("query: where do zebras live?"))
    near = np.array(model.embed("Zebras live on the African savanna."))
    far = np.array(model.embed("Sourdough bread needs a starter."))
    assert query.shape == (384,) and abs(np.linalg.norm(query) - 1) < 1e-3
    assert query @ near > query @ far
    assert model.count_tokens("Zebras live") > 2  # special tokens and prefix included
