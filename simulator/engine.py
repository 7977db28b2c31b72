"""The generation seam: an `Engine` turns requests into tokens and vectors.

The server owns timing, slots, VRAM, stop strings and maxTokens; an engine only says
what the model would produce. `DeterministicEngine` is the default; a real-model engine
(issue 10) implements the same protocol and sets `paced = False` so the server does not
add simulated decode delays on top of real ones.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from simulator import gbnf, textgen, tokenizer
from simulator.config import ModelConfig, TimingConfig
from simulator.embedder import HashEmbedder


@dataclass
class PredictRequest:
    model_key: str
    messages: list[dict[str, Any]]
    completion: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)
    force_tool: bool = False
    json_schema: dict[str, Any] | None = None
    gbnf_grammar: str | None = None
    max_tokens: int | None = None
    stop_strings: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass
class TextPiece:
    content: str


@dataclass
class ToolCall:
    name: str
    call_id: str
    arguments: dict[str, Any]


GenEvent = TextPiece | ToolCall


class Engine(Protocol):
    paced: bool  # True: the server applies the simulated decode/prefill timing

    def tokenize(self, model: ModelConfig, text: str) -> list[int]: ...
    def count_tokens(self, model: ModelConfig, text: str) -> int: ...
    def format_prompt(self, model: ModelConfig, request: PredictRequest) -> str: ...
    def expected_reply_tokens(self, model: ModelConfig, request: PredictRequest) -> int: ...
    def generate(self, model: ModelConfig,
                 request: PredictRequest) -> AsyncIterator[GenEvent]: ...
    def embed(self, model: ModelConfig, text: str) -> list[float]: ...
    def embedding_input(self, model: ModelConfig, text: str,
                        context_tokens: int) -> tuple[str, int]: ...


def message_text(message: dict[str, Any]) -> str:
    parts = message.get("content", [])
    if isinstance(parts, str):
        return parts
    texts = [p.get("text", "") for p in parts if p.get("type") == "text"]
    texts += [p.get("content", "") for p in parts if p.get("type") == "toolCallResult"]
    return "".join(texts)


def chat_template(messages: list[dict[str, Any]],
                  tools: list[dict[str, Any]] | None = None) -> str:
    """A fixed ChatML-like template; applyPromptTemplate returns exactly this. Tools are
    rendered into the prompt as real chat templates do, so they take prompt tokens."""
    head = f"<|tools|>\n{json.dumps(tools)}\n" if tools else ""
    body = "".join(f"<|{m.get('role', 'user')}|>\n{message_text(m)}\n" for m in messages)
    return head + body + "<|assistant|>\n"


class DeterministicEngine:
    paced = True

    def __init__(self, timing: TimingConfig,
                 forced_reply_tokens: Callable[[], int | None] | None = None) -> None:
        self.timing = timing
        self.forced_reply_tokens = forced_reply_tokens
        self._embedder = HashEmbedder()

    def tokenize(self, model: ModelConfig, text: str) -> list[int]:
        tokens = tokenizer.tokenize(text)
        if model.type == "embedding":  # LM Studio: the model's start and end tokens added
            return [tokenizer.START_ID, *tokens, tokenizer.END_ID]
        return tokens

    def count_tokens(self, model: ModelConfig, text: str) -> int:
        return tokenizer.count(text)

    def format_prompt(self, model: ModelConfig, request: PredictRequest) -> str:
        if request.completion:
            return "".join(message_text(m) for m in request.messages)
        return chat_template(request.messages, request.tools)

    def embed(self, model: ModelConfig, text: str) -> list[float]:
        return self._embedder.embed(text, model.embedding_length)

    def embedding_input(self, model: ModelConfig, text: str,
                        context_tokens: int) -> tuple[str, int]:
        """(what LM Studio embeds of `text`, its tokens with the start and end tokens).

        Over the context, LM Studio's llama.cpp engine keeps the first `context_tokens`
        tokens: the start token and `context_tokens - 1` of the text (the end token is cut).
        """
        tokens = tokenizer.count(text) + tokenizer.SPECIAL_TOKENS
        if tokens <= context_tokens:
            return text, tokens
        return "".join(tokenizer.pieces(text)[:max(0, context_tokens - 1)]), tokens

    def expected_reply_tokens(self, model: ModelConfig, request: PredictRequest) -> int:
        forced = self.forced_reply_tokens() if self.forced_reply_tokens else None
        if forced is not None:
            return int(forced)
        lo, hi = self.timing.reply_min_tokens, self.timing.reply_max_tokens
        return _rng(request).randint(lo, max(lo, hi))

    async def generate(self, model: ModelConfig,
                       request: PredictRequest) -> AsyncIterator[GenEvent]:
        for event in self._plan(model, request):
            yield event

    def _plan(self, model: ModelConfig, request: PredictRequest) -> Iterator[GenEvent]:
        rng = _rng(request)
        last = request.messages[-1] if request.messages else {}
        if request.json_schema is not None:
            value = textgen.SchemaFaker(request.json_schema, rng).value()
            return (TextPiece(p) for p in tokenizer.pieces(json.dumps(value)))
        if request.gbnf_grammar is not None:  # checked by predict: it parses
            text = gbnf.generate(request.gbnf_grammar, rng, textgen.iter_word_pieces(rng))
            return (TextPiece(p) for p in _all_pieces(text))
        if last.get("role") == "tool":
            return _after_tool(request, rng)
        if request.tools and last.get("role") == "user":
            tool = textgen.choose_tool(request.tools, message_text(last), request.force_tool)
            if tool is not None:
                args = textgen.tool_arguments(tool, message_text(last), rng)
                call_id = f"call_{rng.getrandbits(40):010x}"
                return iter([ToolCall(tool["function"]["name"], call_id, args)])
        n = self.expected_reply_tokens(model, request)
        return (TextPiece(p) for p in itertools.islice(textgen.iter_word_pieces(rng), n))


def _all_pieces(text: str) -> list[str]:
    """One-token pieces, trailing whitespace included (a grammar may demand it)."""
    pieces = tokenizer.pieces(text)
    tail = text[len("".join(pieces)):]
    return [*pieces, tail] if tail else pieces


def _rng(request: PredictRequest) -> random.Random:
    texts = tuple(message_text(m) for m in request.messages)
    return textgen.make_rng(request.model_key, request.completion, texts, request.seed)


def _after_tool(request: PredictRequest, rng: random.Random) -> Iterator[GenEvent]:
    result = request.messages[-1]
    call_id = next((p.get("toolCallId") for p in result.get("content", [])), None)
    sentence = textgen.tool_result_sentence(_tool_name(request.messages, call_id),
                                            message_text(result))
    extra = list(itertools.islice(textgen.iter_word_pieces(rng), 6))
    extra[0] = " " + extra[0]
    return (TextPiece(p) for p in [*tokenizer.pieces(sentence), *extra])


def _tool_name(messages: list[dict[str, Any]], call_id: Any) -> str:
    for message in reversed(messages):
        for part in message.get("content", []):
            req = part.get("toolCallRequest") if isinstance(part, dict) else None
            if req and (call_id is None or req.get("id") == call_id):
                return str(req.get("name", "tool"))
    return "tool"
