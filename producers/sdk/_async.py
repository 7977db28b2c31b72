"""`AsyncClient` and its handles: `lmstudio.AsyncClient`'s API over the pool.

    async with lms.AsyncClient() as client:
        model = await client.llm.model("llama-3.2-1b-instruct")
        result = await model.respond("Hello")
        stream = await model.respond_stream("Tell me a story")
        async for fragment in stream: ...
        await stream.cancel()

Fragments are read from the job's Redis stream without blocking the event loop; callbacks
fire on the loop's thread. If the task awaiting a prediction is cancelled, so is its job.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import lmstudio as lms
from celery import states

from producers import fragment_reader
from producers.sdk import _async_act, _result
from producers.sdk._callbacks import Callbacks
from producers.sdk._client import LLM, ChatInput, Client, EmbeddingModel
from producers.sdk._errors import translated
from producers.sdk._stream import (
    RESULT_AFTER_STREAM_S,
    PredictionStream,
    StreamOutcome,
    final_result,
    progress_of,
)
from producers.sdk._target import Target
from workers.contract import PredictionConfig
from workers.error import JobCancelledError


class AsyncPredictionStream(StreamOutcome):
    """`lmstudio.AsyncPredictionStream` over a pool job (built from a not-started sync one,
    which holds the validated request)."""

    def __init__(self, plan: PredictionStream) -> None:
        super().__init__()
        self._plan = plan

    async def start(self) -> None:
        """Send the job, as one whose text is read as it comes."""
        await self._send(streamed=True)

    async def _send(self, streamed: bool) -> None:
        if self._handle is not None:
            raise lms.LMStudioRuntimeError("Prediction request has already been sent.")
        with translated():
            self._handle = await asyncio.to_thread(self._plan._submit, streamed)

    async def __aiter__(self) -> AsyncIterator[lms.LlmPredictionFragment]:
        if self._error is not None:
            raise self._error
        if self._final is not None:
            return
        if self._handle is None:
            await self.start()
        try:
            async for fragment in self._fragments():
                yield fragment
            await self._finish()
        except BaseException as exc:
            if self._final is None:
                await self._abandon(exc)
            raise

    async def wait_for_result(self) -> lms.PredictionResult:
        if self._handle is None and self._error is None and self._final is None:
            await self._send(streamed=self._plan._callbacks.reads_text())
        async for _ in self:
            pass
        return self.result()

    async def cancel(self) -> None:
        callbacks = self._plan._callbacks
        if self._handle is None or self._final is not None or callbacks.cancelled:
            return
        callbacks.cancelled = True
        with translated():
            await asyncio.to_thread(self._handle.cancel)

    async def aclose(self) -> None:
        if self._handle is not None and self._final is None and self._error is None:
            await self._abandon(lms.LMStudioCancelledError(
                "Prediction cancelled unexpectedly: please use .cancel()"))

    async def __aenter__(self) -> AsyncPredictionStream:
        if self._handle is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _fragments(self) -> AsyncIterator[lms.LlmPredictionFragment]:
        assert self._handle is not None
        callbacks = self._plan._callbacks
        texts = fragment_reader.aread_fragments(self._plan._queue.settings.store_url,
                                                self._handle.id, self._job_finished, None,
                                                self._plan._restarted)
        with translated():
            async for text in texts:
                if callbacks.cancelled:
                    continue
                fragment = _result.fragment(text)
                callbacks.fragment(fragment)
                yield fragment

    async def _job_finished(self) -> bool:
        assert self._handle is not None
        meta = await asyncio.to_thread(self._plan._queue.job_meta, self._handle.id)
        progress = progress_of(meta)
        if progress is not None and not self._plan._callbacks.first_token_seen:
            self._plan._callbacks.progress(progress)
        return meta.get("status") in states.READY_STATES

    async def _finish(self) -> None:
        assert self._handle is not None
        with translated():
            try:
                found: Any = await self._handle.aresult(timeout=RESULT_AFTER_STREAM_S)
            except JobCancelledError as exc:
                found = exc
        self._final, self.tool_calls = final_result(self._plan._model_key,
                                                    self._plan._config, found)
        self._plan._callbacks.message(self._final)

    async def _abandon(self, exc: BaseException) -> None:
        self._error = exc
        callbacks = self._plan._callbacks
        if self._handle is not None and not callbacks.cancelled:
            callbacks.cancelled = True
            # shielded: the cancel must reach Redis even when our task is being cancelled
            await asyncio.shield(asyncio.to_thread(self._handle.cancel))


class AsyncLLM:
    """`lmstudio.AsyncLLM`: await respond / complete / act; respond_stream -> a stream."""

    def __init__(self, sync: LLM) -> None:
        self._sync = sync
        self.identifier = sync.identifier

    def __repr__(self) -> str:
        return f"AsyncLLM(identifier={self.identifier!r})"

    async def respond_stream(self, history: ChatInput, **options: Any) -> AsyncPredictionStream:
        return AsyncPredictionStream(self._sync.respond_stream(history, **options))

    async def respond(self, history: ChatInput, **options: Any) -> lms.PredictionResult:
        return await (await self.respond_stream(history, **options)).wait_for_result()

    async def complete_stream(self, prompt: str, **options: Any) -> AsyncPredictionStream:
        return AsyncPredictionStream(self._sync.complete_stream(prompt, **options))

    async def complete(self, prompt: str, **options: Any) -> lms.PredictionResult:
        return await (await self.complete_stream(prompt, **options)).wait_for_result()

    async def act(self, chat: ChatInput, tools: Iterable[Any], **options: Any) -> lms.ActResult:
        return await _async_act.act(self, chat, tools, **options)

    def chat_stream(self, history: ChatInput, config: PredictionConfig,
                    preset: str | None, callbacks: Callbacks,
                    tools: list[dict[str, Any]] | None = None) -> AsyncPredictionStream:
        return AsyncPredictionStream(self._sync.chat_stream(history, config, preset,
                                                            callbacks, tools))


class AsyncEmbeddingModel:
    def __init__(self, sync: EmbeddingModel) -> None:
        self._sync = sync
        self.identifier = sync.identifier

    async def embed(self, input: str | Iterable[str]
                    ) -> Sequence[float] | Sequence[Sequence[float]]:
        texts = [input] if isinstance(input, str) else list(input)
        with translated():
            handle = await self._sync._client.queue.aembed(self.identifier, texts,
                                                           **self._sync._client.job_options)
            vectors: list[list[float]] = (await handle.aresult()).vectors
        return vectors[0] if isinstance(input, str) else vectors


class _AsyncLlmNamespace:
    def __init__(self, client: Client) -> None:
        self._client = client

    async def model(self, model_key: str | None = None, /, **load_options: Any) -> AsyncLLM:
        sync = await asyncio.to_thread(self._client.llm.model, model_key, **load_options)
        return AsyncLLM(sync)


class _AsyncEmbeddingNamespace:
    def __init__(self, client: Client) -> None:
        self._client = client

    async def model(self, model_key: str | None = None, /,
                    **load_options: Any) -> AsyncEmbeddingModel:
        sync = await asyncio.to_thread(self._client.embedding.model, model_key, **load_options)
        return AsyncEmbeddingModel(sync)


class AsyncClient:
    """`lmstudio.AsyncClient` over the pool (use it with `async with`)."""

    def __init__(self, target: Target = None, *, priority: str = "normal",
                 expires_s: float | None = None, time_limit_s: float | None = None) -> None:
        """Job options as `Client`'s (priority, expires_s, time_limit_s)."""
        self._client = Client(target, priority=priority, expires_s=expires_s,
                              time_limit_s=time_limit_s)
        self.llm = _AsyncLlmNamespace(self._client)
        self.embedding = _AsyncEmbeddingNamespace(self._client)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.close)
