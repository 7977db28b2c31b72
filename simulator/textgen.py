"""Deterministic text, tool calls and schema-shaped JSON for the default engine.

Rules (documented in README.md):
* Text: a seeded stream of vocabulary words in sentences. The seed is a hash of the
  model key, the mode (chat/completion), the messages' text and the load seed.
* Tool call: with tools present and the last message from the user, the model calls the
  first tool whose name appears in the user's text (case-insensitive); if none does and
  the request forces tool use, the first tool. Arguments come from the tool's JSON
  schema: numbers are taken in order from the user's text, then generated.
* After a tool result (last message role "tool"), the model answers
  "The result of <name> is <content>." followed by seeded words.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from typing import Any

from simulator import tool_intent

_TEXT = (
    "the model answers every question with calm and simulated care while tokens flow "
    "through a quiet queue of patient workers who measure latency and memory as the "
    "graphics card hums softly under steady load so each reply stays short clear and "
    "deterministic for tests that check streaming cancellation embeddings tools and "
    "structured output across many parallel slots in the simulated server room today"
)
WORDS = _TEXT.split()
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_QUOTED_RE = re.compile(r"\"([^\"]*)\"|'([^']*)'")


def make_rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def iter_word_pieces(rng: random.Random) -> Iterator[str]:
    """Endless sentence-shaped pieces: ' word', ',', '.', each exactly one token."""
    first = True
    while True:
        length = rng.randint(5, 12)
        for i in range(length):
            word = rng.choice(WORDS)
            yield (word.capitalize() if i == 0 else word) if first else (
                " " + (word.capitalize() if i == 0 else word))
            first = False
            if 0 < i < length - 1 and rng.random() < 0.1:
                yield ","
        yield "."


def tool_result_sentence(name: str, content: str) -> str:
    return f"The result of {name} is {content}."


def choose_tool(tools: list[dict[str, Any]], user_text: str, force: bool) -> dict[str, Any] | None:
    return tool_intent.choose_tool(tools, user_text, force)  # rules: tool_intent.py


def tool_arguments(tool: dict[str, Any], user_text: str, rng: random.Random) -> dict[str, Any]:
    params = tool_intent.required_first(
        tool.get("function", {}).get("parameters") or {"type": "object"})
    hints = _Hints(user_text)
    value = SchemaFaker(params, rng, hints).value()
    return value if isinstance(value, dict) else {}


class _Hints:
    """Values lifted from the user's text, consumed in order."""

    def __init__(self, text: str) -> None:
        self.numbers = [float(n) for n in _NUMBER_RE.findall(text)]
        self.strings = [a or b for a, b in _QUOTED_RE.findall(text)]

    def number(self) -> float | None:
        return self.numbers.pop(0) if self.numbers else None

    def string(self) -> str | None:
        return self.strings.pop(0) if self.strings else None


class SchemaFaker:
    """Generate a value valid against a JSON schema (the subset LLM tools use)."""

    def __init__(self, schema: dict[str, Any], rng: random.Random, hints: _Hints | None = None):
        self.root = schema
        self.rng = rng
        self.hints = hints or _Hints("")

    def value(self) -> Any:
        return self._gen(self.root, depth=0)

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.root
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part] if part else node
            schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def _gen(self, schema: dict[str, Any], depth: int) -> Any:
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return schema["enum"][0]
        for combo in ("anyOf", "oneOf", "allOf"):
            if combo in schema:
                options = [self._resolve(o) for o in schema[combo]]
                non_null = [o for o in options if o.get("type") != "null"] or options
                return self._gen(non_null[0], depth)
        kind = schema.get("type", "object" if "properties" in schema else "string")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        return getattr(self, f"_gen_{kind}", self._gen_string)(schema, depth)

    def _gen_object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties", {})
        return {name: self._gen(sub, depth + 1) for name, sub in props.items()}

    def _gen_array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        lo = int(schema.get("minItems", 1 if depth < 3 else 0))
        hi = int(schema.get("maxItems", max(lo, 3)))
        n = max(lo, min(hi, 2))
        items = schema.get("items") or {"type": "string"}
        return [self._gen(items, depth + 1) for _ in range(n)]

    def _gen_string(self, schema: dict[str, Any], depth: int) -> str:
        text = self.hints.string() or " ".join(self.rng.choice(WORDS) for _ in range(2))
        lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
        text = text.ljust(lo, "x")
        return text[: int(hi)] if hi is not None else text

    def _gen_integer(self, schema: dict[str, Any], depth: int) -> int:
        hinted = self.hints.number()
        lo, hi = _bounds(schema, 0, 100)
        value = int(hinted) if hinted is not None else self.rng.randint(int(lo), int(hi))
        return int(min(max(value, lo), hi))

    def _gen_number(self, schema: dict[str, Any], depth: int) -> float:
        hinted = self.hints.number()
        lo, hi = _bounds(schema, 0.0, 100.0)
        value = hinted if hinted is not None else round(self.rng.uniform(lo, hi), 2)
        return float(min(max(value, lo), hi))

    def _gen_boolean(self, schema: dict[str, Any], depth: int) -> bool:
        return self.rng.random() < 0.5

    def _gen_null(self, schema: dict[str, Any], depth: int) -> None:
        return None


def _bounds(schema: dict[str, Any], lo: float, hi: float) -> tuple[float, float]:
    lo = schema.get("minimum", schema.get("exclusiveMinimum", lo - 1) + 1)
    hi = schema.get("maximum", schema.get("exclusiveMaximum", hi + 1) - 1)
    return (lo, hi) if lo <= hi else (lo, lo)
