"""Which offered tool a request asks for (the deterministic engine's tool choice).

A model calls a tool when the prompt asks for something the tool does. The simulator
reads that from words, with no knowledge of particular tools:
1. a tool whose name is in the text ("use multiply on ...");
2. else the tool whose name words (`get_weather` -> get, weather; camelCase too) or
   their usual synonyms appear in the text, scoring a name word 2 and a longer word of
   its description 1, best first (at least 2 to call);
3. else, when the text carries numbers and an arithmetic operation (`+`, "plus",
   "times", ...) and exactly one tool takes only numbers for its required parameters
   and the text has enough of them, that tool ("numbers and one arithmetic tool");
4. else the first tool when the request forces tool use, otherwise none (text).
"""

from __future__ import annotations

import re
from typing import Any

_WORD_RE = re.compile(r"[a-z]+")
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_GENERIC = {"get", "set", "do", "run", "call", "tool", "fn", "func", "function", "the", "a",
            "an", "of", "to", "for", "and", "or", "with", "by", "is", "in", "on", "it", "this",
            "that", "from", "two", "numbers", "number", "value", "values", "given", "return",
            "returns", "result"}
_SYNONYMS = {
    "add": {"add", "plus", "sum", "total", "addition"},
    "subtract": {"subtract", "minus", "difference", "less"},
    "multiply": {"multiply", "times", "product", "multiplied"},
    "divide": {"divide", "divided", "quotient", "over"},
    "weather": {"weather", "forecast", "temperature"},
    "search": {"search", "find", "look", "lookup"},
}
_ARITHMETIC = re.compile(r"\d\s*[-+*/x×÷^]\s*-?\d|\b(plus|minus|times|multipl\w*|divid\w*|sum|"
                         r"product|difference|quotient|add|subtract|power)\b", re.IGNORECASE)
_NUMERIC_TYPES = {"integer", "number"}
_OPERATORS = {"+": " plus ", "*": " times ", "×": " times ", "x": " times ", "/": " divided ",
              "÷": " divided ", "-": " minus "}
_OPERATOR_RE = re.compile(r"(?<=\d)\s*([-+*/x×÷])\s*(?=-?\d)")


def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def words(text: str) -> set[str]:
    spaced = _CAMEL_RE.sub(" ", text).replace("_", " ").replace("-", " ")
    return {_stem(w) for w in _WORD_RE.findall(spaced.lower())}


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    return tool.get("function") or {}


def _relevance(tool: dict[str, Any], asked: set[str]) -> int:
    fn = _function(tool)
    score = 0
    for name_word in words(str(fn.get("name", ""))) - _GENERIC:
        variants = {_stem(v) for v in _SYNONYMS.get(name_word, set())} | {name_word}
        score += 2 * bool(variants & asked)
    described = {w for w in words(str(fn.get("description", ""))) if len(w) >= 5} - _GENERIC
    return score + len(described & asked)


def _numeric_arity(tool: dict[str, Any]) -> int | None:
    """How many numbers the tool's required parameters take; None if any is not a number."""
    params = _function(tool).get("parameters") or {}
    props = params.get("properties") or {}
    required = params.get("required") or list(props)
    kinds = [(props.get(name) or {}).get("type") for name in required]
    return len(kinds) if kinds and all(k in _NUMERIC_TYPES for k in kinds) else None


def choose_tool(tools: list[dict[str, Any]], user_text: str,
                force: bool) -> dict[str, Any] | None:
    lowered = user_text.lower()
    for tool in tools:
        name = str(_function(tool).get("name", "")).lower()
        if name and name in lowered:
            return tool
    asked = words(_OPERATOR_RE.sub(lambda m: _OPERATORS[m.group(1)], user_text))
    scored = sorted(((_relevance(t, asked), i) for i, t in enumerate(tools)), reverse=True)
    if scored and scored[0][0] >= 2:
        return tools[min(i for s, i in scored if s == scored[0][0])]
    numbers = len(_NUMBER_RE.findall(user_text))
    if numbers and _ARITHMETIC.search(user_text):
        numeric = [t for t in tools if (_numeric_arity(t) or numbers + 1) <= numbers]
        if len(numeric) == 1:
            return numeric[0]
    return tools[0] if (force and tools) else None


def required_first(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its properties reordered: `required` ones first, in that order."""
    props = schema.get("properties")
    if not isinstance(props, dict):
        return schema
    required = [n for n in schema.get("required") or [] if n in props]
    ordered = {n: props[n] for n in required}
    ordered.update((n, p) for n, p in props.items() if n not in ordered)
    return {**schema, "properties": ordered}
