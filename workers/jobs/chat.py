"""Chat and completion jobs: count the prompt, admit, stream the prediction, build the result.

Order of a prediction job:
1. build the request (chat history or prompt) and the SDK config; bad input -> InvalidJobError;
2. bound the prompt tokens locally (`workers.jobs.prompt_bound`); when the bound is near a limit
   (the context, or the GPU memory admission last saw free: a smaller exact reservation
   may be admitted sooner), count them through LM Studio instead (template applied for
   chats); prompt plus max output over the loaded context length -> ContextOverflowError
   at once;
3. `with gate.admit(job_id, prompt_tokens, max_tokens, cancelled):`
4. start the prediction on the worker's SDK loop (`workers.lmstudio.prediction`), attach its
   `cancel()` to the job's cancel token; fragments are buffered by the progress reporter on
   the loop and published by the job every `flush_interval_s` (sooner for a job someone
   streams); a dropped connection restarts it (bounded retries).
A cancelled prediction returns normally with the partial text (stop reason userStopped):
`execution` turns that into the REVOKED state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workers.contract import ChatJob, CompletionJob, PredictionConfig
from workers.error import ContextOverflowError, InvalidJobError, JobCancelledError
from workers.jobs.chat_history import build_history, prompt_chars, raw_tools, tool_definitions
from workers.jobs.context import JobContext, with_retries
from workers.jobs.predict_config import sdk_prediction_config, seed_note
from workers.jobs.progress import flush_interval_s
from workers.jobs.prompt_bound import chat_bound, text_bound
from workers.lmstudio.images import has_images, with_uploaded_images
from workers.lmstudio.prediction import Callbacks, Outcome, Prediction
from workers.lmstudio.prediction_config import checked_sdk_config
from workers.task_display import config_summary

log = logging.getLogger(__name__)


@dataclass
class PredictionRequest:
    """Everything needed to (re)start one prediction."""

    kind: str  # "chat" | "completion"
    payload: Any  # lms.Chat for chats, the prompt string for completions
    config: dict[str, Any]
    max_tokens: int | None
    count_tokens: Callable[[], int]
    bound: int | None = None  # local upper bound of the prompt tokens (None: count)


def run_chat(ctx: JobContext, job: ChatJob) -> dict[str, Any]:
    history = build_history(job)
    _check_size(ctx, prompt_chars(history))
    config = checked_sdk_config(sdk_prediction_config(job.config, raw_tools(job.tools)))
    tools = tool_definitions(config)  # the job's tools or its config.rawTools
    images = has_images(history)  # checked for vision and uploaded before admission
    chat = ctx.session.chat(with_uploaded_images(ctx.session, history) if images else history)
    request = PredictionRequest(
        "chat", chat, config, job.config.max_tokens,
        lambda: ctx.session.count_chat_tokens(chat, tools),
        # the local bound knows text only: tools and images are counted by LM Studio
        chat_bound(ctx.session.overhead, history, bool(tools) or images))
    outcome = _predict(ctx, request, job.config)
    return {**ctx.result_fields(ctx.token.is_requested()), "kind": "chat",
            "content": outcome.content, "parsed": outcome.parsed,
            "tool_calls": outcome.tool_calls, "stats": outcome.stats}


def run_completion(ctx: JobContext, job: CompletionJob) -> dict[str, Any]:
    _check_size(ctx, len(job.prompt))
    request = PredictionRequest(
        "completion", job.prompt, checked_sdk_config(sdk_prediction_config(job.config)),
        job.config.max_tokens,
        lambda: ctx.session.count_tokens(job.prompt),
        text_bound(ctx.session.overhead, job.prompt))
    outcome = _predict(ctx, request, job.config)
    return {**ctx.result_fields(ctx.token.is_requested()), "kind": "completion",
            "content": outcome.content, "stats": outcome.stats,
            # only when asked for: producers older than `parsed` refuse unknown fields
            **({"parsed": outcome.parsed} if outcome.parsed is not None else {})}


def _predict(ctx: JobContext, request: PredictionRequest, config: PredictionConfig) -> Outcome:
    if ctx.session.model is None or ctx.session.model.kind != "llm":
        raise InvalidJobError(f"{request.kind} jobs need an LLM; this worker serves an "
                              "embedding model: send them to the LLM's queue")
    note = seed_note(config)
    if note:
        log.info("job %s: %s", ctx.job_id, note)
    # The config as sent (secrets masked), so a log shows what LM Studio was asked for.
    log.info("job %s: %s %s", ctx.job_id, request.kind,
             config_summary(request.config) or "config()")
    ctx.progress.phase("prefill")
    prompt_tokens = prompt_tokens_of(ctx, request)
    max_output = _check_context(ctx, prompt_tokens, request.max_tokens)
    ctx.progress.phase("admission")
    with ctx.gate.admit(ctx.job_id, prompt_tokens, max_output, ctx.token.is_requested,
                        ctx.priority):
        ctx.progress.phase("prefill")
        return with_retries(ctx, lambda: _stream_once(ctx, request),
                            on_retry=ctx.progress.restart)


def _stream_once(ctx: JobContext, request: PredictionRequest) -> Outcome:
    if ctx.token.is_requested():
        raise JobCancelledError(f"job {ctx.job_id} was cancelled", None)
    callbacks = Callbacks(on_prompt=ctx.progress.prompt,
                          on_first_token=ctx.progress.first_token,
                          on_fragment=ctx.progress.fragment)
    prediction = Prediction.begin(ctx.session, request.kind, request.payload, request.config,
                                  callbacks)
    ctx.token.attach(prediction.cancel)  # a cancel before the stream started waits for it
    try:
        return prediction.wait(ctx.progress.stream.flush, flush_interval_s(ctx.streamed),
                               first_at_once=ctx.streamed)
    finally:
        ctx.token.detach()


def prompt_tokens_of(ctx: JobContext, request: PredictionRequest) -> int:
    """The local bound when it clearly fits (the context, and GPU memory as admission last
    saw it), else LM Studio's exact count: a tighter reservation is admitted sooner."""
    assert ctx.session.model is not None
    bound, context = request.bound, ctx.session.model.context_length
    if (bound is not None and bound <= ctx.settings.local_count_max_tokens
            and bound + (request.max_tokens or 0) <= context and bound < context
            and not ctx.gate.is_tight(bound, _reserved_output(request.max_tokens, bound,
                                                              context))):
        return bound
    return with_retries(ctx, request.count_tokens)


def _reserved_output(max_tokens: int | None, prompt_tokens: int, context: int) -> int:
    return max_tokens if max_tokens is not None else context - prompt_tokens


def _check_size(ctx: JobContext, chars: int) -> None:
    if chars > ctx.settings.max_prompt_chars:
        raise InvalidJobError(
            f"prompt has {chars} characters, more than LMQ_MAX_PROMPT_CHARS="
            f"{ctx.settings.max_prompt_chars}: shorten it or raise the limit"
        )


def _check_context(ctx: JobContext, prompt_tokens: int, max_tokens: int | None) -> int:
    """Fail at once when the job cannot fit; return the output tokens to reserve."""
    assert ctx.session.model is not None
    context = ctx.session.model.context_length
    wanted = prompt_tokens + (max_tokens or 0)
    if wanted > context or prompt_tokens >= context:
        raise ContextOverflowError(
            f"prompt of {prompt_tokens} tokens plus max_tokens={max_tokens or 0} needs "
            f"{wanted} tokens, but {ctx.session.model.key} is loaded with a context length "
            f"of {context}: shorten the prompt, lower max_tokens, or load the model with a "
            "larger LMQ_CONTEXT_LENGTH"
        )
    return _reserved_output(max_tokens, prompt_tokens, context)
