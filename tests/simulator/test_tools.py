"""Tool calls through act() and structured (JSON schema) output."""

from __future__ import annotations

from typing import Literal

import lmstudio as lms
import pytest
from pydantic import BaseModel

from simulator import textgen
from tests.simulator.conftest import LLM_KEY

pytestmark = pytest.mark.timeout(30)


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


def test_act_runs_the_named_tool(client: lms.Client) -> None:
    model = client.llm.model(LLM_KEY)
    messages: list[lms.AnyChatMessage] = []
    result = model.act("Please add 2 and 3", [multiply, add], on_message=messages.append)
    assert result.rounds == 2
    tool_results = [m for m in messages if isinstance(m, lms.ToolResultMessage)]
    assert tool_results and tool_results[0].content[0].content == "5"
    final = messages[-1]
    assert isinstance(final, lms.AssistantResponse)
    assert "The result of add is 5." in final.content[0].text


def test_no_tool_named_means_plain_text(client: lms.Client) -> None:
    model = client.llm.model(LLM_KEY)
    result = model.act("Just chat with me", [add])
    assert result.rounds == 1


def test_tool_call_stop_reason(simulator, client: lms.Client) -> None:  # type: ignore[no-untyped-def]
    model = client.llm.model(LLM_KEY)
    model.act("use multiply on 1.5 and 4", [multiply])
    successes = simulator.admin.log(type="channelSend:success")
    assert successes[0]["msg"]["message"]["stats"]["stopReason"] == "toolCalls"
    ends = simulator.admin.log(type="channelSend:toolCallGenerationEnd")
    request = ends[0]["msg"]["message"]["toolCallRequest"]
    assert request["name"] == "multiply" and request["arguments"] == {"a": 1.5, "b": 4.0}


class Author(BaseModel):
    name: str
    born: int


class Book(BaseModel):
    title: str
    genre: Literal["fiction", "poetry"]
    rating: float
    in_print: bool
    authors: list[Author]
    tags: list[str]


def test_structured_output_matches_pydantic_schema(client: lms.Client) -> None:
    result = client.llm.model(LLM_KEY).respond("Describe a book", response_format=Book)
    assert isinstance(result.parsed, dict)
    book = Book.model_validate(result.parsed)
    assert book.authors and book.genre == "fiction"


def test_schema_faker_handles_refs_bounds_and_enums() -> None:
    schema = {
        "type": "object", "required": ["n", "kind", "child"],
        "properties": {
            "n": {"type": "integer", "minimum": 5, "maximum": 7},
            "kind": {"enum": ["a", "b"]},
            "opt": {"anyOf": [{"type": "null"}, {"type": "number"}]},
            "child": {"$ref": "#/$defs/Child"},
        },
        "$defs": {"Child": {"type": "object", "properties": {"ok": {"type": "boolean"}}}},
    }
    value = textgen.SchemaFaker(schema, textgen.make_rng(1)).value()
    assert 5 <= value["n"] <= 7 and value["kind"] == "a"
    assert isinstance(value["opt"], float) and isinstance(value["child"]["ok"], bool)


def test_raw_openai_style_tools_yield_tool_call_events(client: lms.Client) -> None:
    # How the workers read tool calls: rawTools in OpenAI format + the stream's events.
    from lmstudio.json_api import PredictionToolCallEvent

    tool = {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}
    stream = client.llm.model(LLM_KEY).respond_stream(
        "What does get_weather say for 'Paris'?",
        config={"rawTools": {"type": "toolArray", "tools": [tool]}})
    calls = [e.arg for e in stream._iter_events() if isinstance(e, PredictionToolCallEvent)]
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert stream.result().stats.stop_reason == "toolCalls"
