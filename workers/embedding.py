"""Embedding jobs: embed many texts concurrently over the worker's one client.

The SDK's `embed(list)` sends one RPC per string, one after another. Here up to
`LMQ_EMBED_CONCURRENCY` texts are in flight at once (count tokens, check the context length,
embed), submitted in order. A cancel stops submitting; texts already in flight finish, so
what is kept is exactly the first `completed` texts (a partial EmbeddingResult with
`cancelled=True`).
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from workers.context import JobContext, with_retries
from workers.contract import EmbeddingJob
from workers.error import ContextOverflowError, InvalidJobError

Item = tuple[list[float], int]  # (vector, token count)


def run_embedding(ctx: JobContext, job: EmbeddingJob) -> dict[str, Any]:
    _check_job(ctx, job)
    total = len(job.texts)
    done: list[Item | None] = [None] * total
    ctx.progress.phase("admission")
    with ctx.gate.admit(ctx.job_id, 0, 0, ctx.token.is_requested):
        ctx.progress.items(0, total)
        _embed_all(ctx, job.texts, done)
    completed = _prefix(done)
    vectors = [item[0] for item in done[:completed] if item is not None]
    tokens = [item[1] for item in done[:completed] if item is not None]
    return {**ctx.result_fields(completed < total or ctx.token.is_requested()),
            "kind": "embedding", "vectors": vectors,
            "dimension": len(vectors[0]) if vectors else 0, "token_counts": tokens,
            "total_tokens": sum(tokens), "completed": completed}


def _embed_all(ctx: JobContext, texts: list[str], done: list[Item | None]) -> None:
    width = max(1, min(ctx.settings.embed_concurrency, len(texts)))
    in_flight: dict[Future[Item], int] = {}
    next_index = 0
    with ThreadPoolExecutor(width, thread_name_prefix=f"lmq-embed-{ctx.job_id[:8]}") as pool:
        try:
            while next_index < len(texts) or in_flight:
                while (next_index < len(texts) and len(in_flight) < width
                       and not ctx.token.is_requested()):
                    future = pool.submit(_embed_one, ctx, next_index, texts[next_index])
                    in_flight[future] = next_index
                    next_index += 1
                if not in_flight:
                    break
                finished, _ = wait(in_flight, timeout=ctx.settings.cancel_poll_s,
                                   return_when=FIRST_COMPLETED)
                for future in finished:
                    done[in_flight.pop(future)] = future.result()
                ctx.progress.items(sum(item is not None for item in done), len(texts))
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise


def _embed_one(ctx: JobContext, index: int, text: str) -> Item:
    def attempt() -> Item:
        tokens = ctx.session.count_tokens(text)
        assert ctx.session.model is not None
        if tokens > ctx.session.model.context_length:
            raise ContextOverflowError(
                f"texts[{index}] has {tokens} tokens, over the context length "
                f"{ctx.session.model.context_length} of {ctx.session.model.key}: split it"
            )
        return ctx.session.embed(text), tokens

    return with_retries(ctx, attempt)


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
