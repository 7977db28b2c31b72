"""The predict channel: queue for a slot, reserve KV, prefill, stream, finish.

Timing follows the config (prefill tokens/s, decode tokens/s per slot); cancel stops
generation at once and still ends with `success` (stopReason userStopped), as the SDK
requires. OOM and context overflow fail like LM Studio (see errors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from simulator import errors, tokenizer
from simulator.catalog import Instance
from simulator.connection import Channel
from simulator.engine import PredictRequest, TextPiece, ToolCall
from simulator.errors import SimError
from simulator.gbnf import check_grammar
from simulator.image_input import require_vision
from simulator.kv_cells import KvUse
from simulator.kvconfig import checkbox, kv, layer_names, stack_fields
from simulator.preset import preset_fields
from simulator.stopstrings import StopMatcher

_PROGRESS_EVERY_S = 0.5  # LM Studio's SDK times out after 60 s without a packet


class _Dropped(Exception):
    """The connection was aborted on purpose (fault injection)."""


@dataclass
class Run:
    channel: Channel
    inst: Instance
    request: PredictRequest
    fields: dict[str, Any]
    prompt_tokens: int
    kv: KvUse | None = None
    generated: int = 0
    stop_reason: str | None = None
    started_t: float = field(default_factory=time.time)
    decode_start_t: float | None = None
    first_token_t: float | None = None


def parse_request(channel: Channel) -> tuple[Instance, PredictRequest, dict[str, Any]]:
    param = channel.param
    specifier = param.get("modelSpecifier")
    inst = channel.conn.state.catalog.resolve(specifier, "llm")
    if inst is None:
        raise errors.model_not_found((specifier or {}).get("query", specifier))
    channel.conn.state.lifetimes.touch(inst)  # a request: the idle timer starts again
    messages = (param.get("history") or {}).get("messages", [])
    require_vision(inst.model, messages)
    stack = param.get("predictionConfigStack")
    fields = {**preset_fields(channel.conn.state.config.presets,
                              param.get("fuzzyPresetIdentifier")), **stack_fields(stack)}
    tools = fields.get("llm.prediction.tools") or {}
    structured = fields.get("llm.prediction.structured") or {}
    max_tokens = checkbox(fields.get("llm.prediction.maxPredictedTokens"))
    if structured.get("type") == "gbnf":
        check_grammar(structured.get("gbnfGrammar"))
    request = PredictRequest(
        model_key=inst.key, messages=messages,
        completion="completeModeFormatting" in layer_names(stack),
        tools=tools.get("tools", []) if tools.get("type") == "toolArray" else [],
        force_tool=bool(tools.get("force")),
        json_schema=structured.get("jsonSchema") if structured.get("type") == "json" else None,
        gbnf_grammar=structured.get("gbnfGrammar") if structured.get("type") == "gbnf" else None,
        max_tokens=_non_negative_int(max_tokens),
        stop_strings=list(fields.get("llm.prediction.stopStrings") or []), seed=inst.seed)
    return inst, request, fields


def _non_negative_int(value: Any) -> int | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    return int(value) if ok else None


async def predict(channel: Channel) -> None:
    inst, request, fields = parse_request(channel)  # not found -> channelError (ModelNotFound)
    try:
        run = _start(channel, inst, request, fields)
        if await _wait_for_slot(run):
            run.inst.channels.add(channel)
            try:
                await _run_with_kv(run)
            finally:
                run.inst.channels.discard(channel)
                run.inst.slots.release()
                channel.conn.state.lifetimes.touch(run.inst)  # idle from the end
        else:
            run.stop_reason = run.channel.cancel_reason
        await _finish(run)
    except SimError as exc:
        await _fail(channel, exc.error)
    except _Dropped:
        return


def _start(channel: Channel, inst: Instance, request: PredictRequest,
           fields: dict[str, Any]) -> Run:
    engine = channel.conn.state.engine
    prompt_tokens = engine.count_tokens(inst.model, engine.format_prompt(inst.model, request))
    if prompt_tokens >= inst.seq_context:  # n_ctx, or n_ctx / P without a unified KV cache
        raise errors.context_overflow(prompt_tokens, inst.seq_context)
    return Run(channel, inst, request, fields, prompt_tokens)


async def _wait_for_slot(run: Run) -> bool:
    """Take a slot (FIFO); False if cancelled while waiting."""
    stats, slots, cancelled = run.channel.stats, run.inst.slots, run.channel.cancelled
    stats.slot_wait_start_t = time.time()
    if not await slots.acquire_unless(cancelled):
        return False
    stats.slot_acquired_t = run.started_t = time.time()
    run.channel.conn.state.log.record(run.channel.conn.id, run.channel.conn.ns, "event",
                                      {"type": "slotAcquired", "channelId": run.channel.id})
    if cancelled.is_set():
        slots.release()
        return False
    return True


async def _run_with_kv(run: Run) -> None:
    """Prefill and decode, holding the sequence's KV cache as it grows (`kv_cells`)."""
    state = run.channel.conn.state
    run.kv = KvUse(run.inst, state.vram, f"kv:{run.channel.conn.id}:{run.channel.id}")
    try:
        run.kv.take(run.prompt_tokens)  # the prompt's batch
        if await _prefill(run):
            await _decode(run)
    finally:
        run.kv.release()


async def _sleep_or_cancel(channel: Channel, delay_s: float) -> bool:
    """Sleep; return True as soon as the channel is cancelled."""
    if delay_s > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(channel.cancelled.wait(), delay_s)
    return channel.cancelled.is_set()


async def _prefill(run: Run) -> bool:
    """Simulate prompt processing with progress packets; False if cancelled."""
    state = run.channel.conn.state
    tps = state.config.timing.prefill_tokens_per_s
    duration_s = (run.prompt_tokens / tps if tps > 0 else 0.0) + state.faults.slow_prefill_s
    if not state.engine.paced:
        duration_s = state.faults.slow_prefill_s
    steps = max(1, math.ceil(duration_s / _PROGRESS_EVERY_S))
    for step in range(1, steps + 1):
        if await _sleep_or_cancel(run.channel, duration_s / steps):
            run.stop_reason = run.channel.cancel_reason
            return False
        await run.channel.send({"type": "promptProcessingProgress", "progress": step / steps})
    return True


async def _decode(run: Run) -> None:
    await _Decoder(run).run()


class _Decoder:
    def __init__(self, run: Run) -> None:
        self.run_ = run
        state = run.channel.conn.state
        tps = state.config.timing.decode_tokens_per_s
        self.dt_s = 1.0 / tps if (tps > 0 and state.engine.paced) else 0.0
        self.drop_after = state.faults.take_drop()
        self.matcher = StopMatcher(run.request.stop_strings)
        max_tokens = run.request.max_tokens
        self.context_left = run.inst.seq_context - run.prompt_tokens
        self.limit = min(self.context_left, max_tokens if max_tokens is not None else 1 << 60)
        self.pending_tokens = 0
        self.cancel_lag = state.faults.cancel_lag_fragments  # a sluggish server's overrun

    def _stopped(self) -> bool:
        """True once cancelled, after any configured lag of extra tokens."""
        if not self.run_.channel.cancelled.is_set():
            return False
        if self.cancel_lag > 0 and self.run_.channel.cancel_reason == "userStopped":
            self.cancel_lag -= 1
            return False
        return True

    async def run(self) -> None:
        run, channel = self.run_, self.run_.channel
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        run.decode_start_t = time.time()
        engine = channel.conn.state.engine
        async for event in engine.generate(run.inst.model, run.request):
            if run.generated >= self.limit:
                run.stop_reason = ("maxPredictedTokensReached" if self.limit < self.context_left
                                   else "contextLengthReached")
                break
            delay_s = t0 + (run.generated + 1) * self.dt_s - loop.time()
            await (asyncio.sleep(delay_s) if delay_s > 0 else asyncio.sleep(0))
            if self._stopped():
                run.stop_reason = run.channel.cancel_reason
                return
            if isinstance(event, ToolCall):
                await self._tool_call(event)
                continue
            if await self._token(event):
                return
        await self._emit(self.matcher.flush())  # a partial stop-string match that never completed
        run.stop_reason = run.stop_reason or "eosFound"

    async def _token(self, event: TextPiece) -> bool:
        """Emit one token; True when a stop string ended the prediction."""
        if self.run_.kv is not None:
            self.run_.kv.take(1)  # its cell (llama.cpp) or bytes (MLX), or the engine's error
        self.run_.generated += 1
        self.pending_tokens += 1
        text, hit = self.matcher.feed(event.content)
        await self._emit(text)
        if hit:
            self.run_.stop_reason = "stopStringFound"
        return hit

    async def _emit(self, text: str) -> None:
        if not text:
            return
        run = self.run_
        if run.first_token_t is None:
            run.first_token_t = time.time()
        await run.channel.send_fragment({"type": "fragment", "fragment": {
            "content": text, "tokensCount": max(1, self.pending_tokens),
            "containsDrafted": False, "reasoningType": "none"}})
        self.pending_tokens = 0
        if self.drop_after is not None and run.channel.stats.fragments >= self.drop_after:
            run.channel.conn.abort()
            raise _Dropped

    async def _tool_call(self, call: ToolCall) -> None:
        channel, args_json = self.run_.channel, json.dumps(call.arguments)
        await channel.send({"type": "toolCallGenerationStart", "toolCallId": call.call_id})
        await channel.send({"type": "toolCallGenerationNameReceived", "name": call.name})
        for piece in tokenizer.pieces(args_json):
            await channel.send({"type": "toolCallGenerationArgumentFragmentGenerated",
                                "content": piece})
        tokens = tokenizer.count(args_json) + 1
        if self.run_.kv is not None:
            self.run_.kv.take(tokens)
        self.run_.generated += tokens
        await channel.send({"type": "toolCallGenerationEnd", "toolCallRequest": {
            "type": "function", "id": call.call_id, "name": call.name,
            "arguments": call.arguments}})
        self.run_.stop_reason = "toolCalls"


async def _finish(run: Run) -> None:
    state, inst = run.channel.conn.state, run.inst
    now = time.time()
    decode_s = now - run.decode_start_t if run.decode_start_t else 0.0
    stop_reason = run.stop_reason or "eosFound"
    stats: dict[str, Any] = {
        "stopReason": stop_reason,
        "tokensPerSecond": run.generated / decode_s if decode_s > 0 else 0.0,
        "numGpuLayers": float(round(inst.model.layers * inst.offload_ratio)),
        "timeToFirstTokenSec": (run.first_token_t - run.started_t) if run.first_token_t else 0.0,
        "promptTokensCount": run.prompt_tokens,
        "predictedTokensCount": run.generated,
        "totalTokensCount": run.prompt_tokens + run.generated,
    }
    run.channel.stats.stop_reason = stop_reason
    await run.channel.send({
        "type": "success", "stats": stats, "modelInfo": state.catalog.instance_info(inst),
        "loadModelConfig": state.catalog.load_config_kv(inst), "predictionConfig": kv(run.fields)})
    await run.channel.close()


async def _fail(channel: Channel, error: dict[str, Any]) -> None:
    if channel.conn.state.config.server.error_style == "channelError":
        await channel.error(error)
        return
    channel.stats.error = str(error.get("title"))
    await channel.send({"type": "error", "error": error})
    await channel.close()


CHANNELS: dict[str, Any] = {"predict": predict}
