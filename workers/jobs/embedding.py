"""Embedding jobs: embed many texts concurrently over the worker's one client.

The SDK's `embed(list)` sends one RPC per string, one after another. Here up to
`LMQ_EMBED_CONCURRENCY` texts are in flight at once (count tokens, check the context length,
embed), submitted in order, all on the worker's SDK loop (`workers.lmstudio.loop`): the job
thread hands the whole job over and waits, reporting progress. A cancel stops submitting;
texts already in flight finish, so what is kept is exactly the first `completed` texts (a
partial EmbeddingResult with `cancelled=True`). When LM Studio goes away mid-job, the texts
left run from threads whose calls reconnect and retry (`workers.jobs.context.with_retries`).

Token counts. By default (`exact_token_counts=True`) LM Studio counts every text (one more
RPC per text) and a text over the context fails with ContextOverflowError. "Over" leaves room
for the special tokens the engine adds (`contract.EMBEDDING_SPECIAL_TOKENS`): countTokens
leaves them out, and LM Studio embeds a longer input truncated to the context, with no error. With
`exact_token_counts=False` a text costs one RPC: its local upper bound
(`workers.jobs.prompt_bound.text_bound`: UTF-8 bytes + twice the tokenizer's measured overhead)
guards the context, and only a text whose bound exceeds the context length (or when no
overhead was measured) is counted exactly. The result's `token_counts` are then the bounds
(exact figures only for the texts counted), with `token_counts_exact=False`. A job may
carry exact counts (`EmbeddingJob.token_counts`, from LM Studio's countTokens on the
producer's side): those texts are checked against the context with them, and not counted
again.

Vectors. `encoding_format="base64"` packs each vector as it arrives into the base64 of its
little-endian float32 bytes (`vectors_base64`): the stored result is ~4x smaller than JSON
floats, and storing and parsing it costs a fraction (JSON-encoding float lists was the
largest CPU cost of an embedding worker).
"""

from __future__ import annotations

import asyncio
import base64
import sys
import threading
from array import array
from collections.abc import Sequence
from typing import Any

from workers import green
from workers.contract import EMBEDDING_SPECIAL_TOKENS, EmbeddingJob
from workers.error import ContextOverflowError, InvalidJobError, LMStudioUnavailableError
from workers.jobs.context import JobContext, with_retries
from workers.jobs.progress import STATE_INTERVAL_S
from workers.jobs.prompt_bound import text_bound

Item = tuple[list[float] | str, int, bool]  # (vector or its base64, tokens, count is exact)


def run_embedding(ctx: JobContext, job: EmbeddingJob) -> dict[str, Any]:
    _check_job(ctx, job)
    total = len(job.texts)
    done: list[Item | None] = [None] * total
    ctx.progress.phase("admission")
    with ctx.gate.admit(ctx.job_id, 0, 0, ctx.token.is_requested, ctx.priority):
        ctx.progress.items(0, total)
        _embed_all(ctx, job, done)
    completed = _prefix(done)
    items = [item for item in done[:completed] if item is not None]
    vectors = [item[0] for item in items]
    tokens = [item[1] for item in items]
    packed = job.encoding_format == "base64"
    return {**ctx.result_fields(completed < total or ctx.token.is_requested()),
            "kind": "embedding", "vectors": [] if packed else vectors,
            "vectors_base64": vectors if packed else [],
            "dimension": _dimension(vectors[0]) if vectors else 0, "token_counts": tokens,
            "total_tokens": sum(tokens), "completed": completed,
            "token_counts_exact": all(item[2] for item in items)}


def _embed_all(ctx: JobContext, job: EmbeddingJob, done: list[Item | None]) -> None:
    """The texts on the SDK loop, `width` at a time: the job thread crosses to the loop once
    per job, not once or twice per text (a count and an embed), as the SDK's sync client and
    this worker's earlier threads did. If LM Studio went away meanwhile, the texts left go
    through `_embed_in_threads`, whose calls reconnect and retry (`with_retries`)."""
    width = max(1, min(ctx.settings.embed_concurrency, len(job.texts)))
    future = ctx.session.loop.submit(_embed_on_loop(ctx, job, done, width))
    # Progress at the cadence its writer stores it (a cancel reaches the lanes' token).
    while not green.wait_future(future, STATE_INTERVAL_S):
        ctx.progress.items(sum(item is not None for item in done), len(done))
    failure = future.result()
    if isinstance(failure, LMStudioUnavailableError):
        green.blocking(_embed_in_threads, ctx, job, done, width)
    elif failure is not None:
        raise failure


async def _embed_on_loop(ctx: JobContext, job: EmbeddingJob, done: list[Item | None],
                         width: int) -> Exception | None:
    """`width` lanes each take the next text, in order, until none is left, the job is
    cancelled or a text failed; what a lane took, it finishes (so `done` fills a prefix).
    The first failure is returned, not raised: the job thread decides what it means."""
    order = iter(range(len(job.texts)))
    failed: list[Exception] = []

    async def lane() -> None:
        while not failed and not ctx.token.is_requested():
            index = next(order, None)
            if index is None:
                return
            try:
                text = job.texts[index]
                known = _known_tokens(ctx, job, index)
                tokens, counted = known or (
                    _checked(ctx, index, await ctx.session.acount_tokens(text)), True)
                done[index] = _item(job, await ctx.session.aembed(text), tokens, counted)
            except Exception as exc:  # noqa: BLE001 - handed to the job thread
                failed.append(exc)

    await asyncio.gather(*(lane() for _ in range(width)))
    return failed[0] if failed else None


def _embed_in_threads(ctx: JobContext, job: EmbeddingJob, done: list[Item | None],
                      width: int) -> None:
    """The texts not done yet, `width` threads each taking the next one in order, every
    call reconnecting and retrying when LM Studio is unavailable (`with_retries`)."""
    taken = iter([index for index, item in enumerate(done) if item is None])
    failed: list[BaseException] = []

    def embed_in_order() -> None:
        while not failed and not ctx.token.is_requested():
            index = next(taken, None)  # a list iterator's next is atomic: one thread each
            if index is None:
                return
            try:
                done[index] = _embed_one(ctx, job, index)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the job's thread
                failed.append(exc)

    threads = [threading.Thread(target=embed_in_order, daemon=True,
                                name=f"lmq-embed-{ctx.job_id[:8]}-{n}") for n in range(width)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(STATE_INTERVAL_S)
            ctx.progress.items(sum(item is not None for item in done), len(done))
    if failed:
        raise failed[0]


def _embed_one(ctx: JobContext, job: EmbeddingJob, index: int) -> Item:
    text = job.texts[index]

    def attempt() -> Item:
        tokens, counted = _known_tokens(ctx, job, index) or (
            _checked(ctx, index, ctx.session.count_tokens(text)), True)
        return _item(job, ctx.session.embed(text), tokens, counted)

    return with_retries(ctx, attempt)


def _item(job: EmbeddingJob, vector: list[float], tokens: int, counted: bool) -> Item:
    return (float32_base64(vector) if job.encoding_format == "base64" else vector,
            tokens, counted)


def float32_base64(vector: Sequence[float]) -> str:
    """The base64 of `vector` as little-endian float32 (EmbeddingResult.vectors_base64)."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _dimension(vector: list[float] | str) -> int:
    return len(base64.b64decode(vector)) // 4 if isinstance(vector, str) else len(vector)


def _known_tokens(ctx: JobContext, job: EmbeddingJob, index: int) -> tuple[int, bool] | None:
    """(tokens, exact?) of texts[index] without asking LM Studio: the job's exact count,
    else the local bound when allowed and within the context; None: LM Studio counts it."""
    given = job.token_counts[index] if job.token_counts else None
    if given is not None:
        return _checked(ctx, index, given), True
    if job.exact_token_counts:
        return None
    bound = text_bound(ctx.session.overhead, job.texts[index])
    return (bound, False) if bound is not None and bound <= _room(ctx) else None


def _checked(ctx: JobContext, index: int, tokens: int) -> int:
    """An exact count, refused when over the context (LM Studio would embed the text cut
    to the context, silently)."""
    if tokens > _room(ctx):
        assert ctx.session.model is not None
        raise ContextOverflowError(
            f"texts[{index}] has {tokens} tokens, over the context length "
            f"{ctx.session.model.context_length} of {ctx.session.model.key} once the model "
            f"adds its {EMBEDDING_SPECIAL_TOKENS} special tokens (LM Studio would embed it "
            f"truncated): split it"
        )
    return tokens


def _room(ctx: JobContext) -> int:
    """Tokens a text may have: the context less the engine's start/end tokens (contract)."""
    assert ctx.session.model is not None
    return ctx.session.model.context_length - EMBEDDING_SPECIAL_TOKENS


def _check_job(ctx: JobContext, job: EmbeddingJob) -> None:
    if ctx.session.model is None or ctx.session.model.kind != "embedding":
        raise InvalidJobError("embedding jobs need an embedding model; this worker serves "
                              "an LLM: send them to the embedding model's queue")
    if len(job.texts) > ctx.settings.max_embed_texts:
        raise InvalidJobError(
            f"{len(job.texts)} texts in one job, more than LMQ_MAX_EMBED_TEXTS="
            f"{ctx.settings.max_embed_texts}: split the job"
        )
    chars = sum(len(text) for text in job.texts)
    if chars > ctx.settings.max_prompt_chars:
        raise InvalidJobError(f"texts have {chars} characters, more than "
                              f"LMQ_MAX_PROMPT_CHARS={ctx.settings.max_prompt_chars}")


def _prefix(done: list[Item | None]) -> int:
    for index, item in enumerate(done):
        if item is None:
            return index
    return len(done)
