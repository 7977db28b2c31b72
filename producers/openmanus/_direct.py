"""`LMStudioProvider`: OpenManus' LLM, answered by LM Studio through the lmstudio SDK."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from producers.openmanus._base import LMStudioLLMBase, Request
from producers.openmanus._messages import Reply, raw_tools, to_history
from producers.openmanus._session import LMStudioSession


class LMStudioProvider(LMStudioLLMBase):
    """Direct provider: each call is one LM Studio prediction from this process.

    Tools go to LM Studio as `rawTools` (OpenAI function format in, tool calls out with
    JSON-string arguments). Token counts come from LM Studio (`count_tokens` asks it; the
    totals use each prediction's stats), so nothing downloads a tiktoken file.
    """

    session: LMStudioSession

    def _make_client(self) -> LMStudioSession:
        self.session = LMStudioSession(self.settings.lmstudio_host, self.model,
                                       sdk_timeout_s=self.settings.sdk_timeout_s)
        self.tokenizer = _LMStudioTokenizer(self.session)  # upstream helpers call .encode()
        self.vision: bool | None = None
        return self.session

    async def _predict(self, request: Request) -> Reply:
        config: dict[str, Any] = {"temperature": request.temperature,
                                  "maxTokens": request.max_tokens,
                                  "contextOverflowPolicy": "stopAtLimit"}
        if request.tools:
            config["rawTools"] = raw_tools(request.tools, force=request.force_tool)
        history = await self._history(request.messages)
        echo = _echo if (request.stream and self.echo_stream) else None
        reply = await self.session.apredict(history, config, request.timeout_s, echo)
        if echo is not None:
            print(flush=True)
        return reply

    async def _history(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        if not any(isinstance(m.get("content"), list) for m in messages):
            return to_history(messages)
        # images: uploading them is blocking SDK I/O, so build the history in a thread
        return await asyncio.to_thread(
            functools.partial(to_history, messages, self.session.upload_image))

    def _keeps_images(self) -> bool:
        # Upstream keeps images only for a hard-coded list of OpenAI/Claude models; here the
        # model's own LM Studio info decides (vision models get the screenshots).
        return bool(self.vision)

    def count_tokens(self, text: str) -> int:
        """LM Studio's token count for `text` (a blocking RPC: not for hot async paths)."""
        return self.session.count_tokens(text)

    async def aconnect(self) -> None:
        """Connect now (clear errors at start-up rather than at the first agent step)."""

        await asyncio.to_thread(self.session.handle)
        self.vision = await asyncio.to_thread(lambda: self.session.vision)

    def close(self) -> None:
        self.session.close()


class _LMStudioTokenizer:
    """Upstream's `tokenizer` attribute (`.encode(text)`), backed by LM Studio."""

    def __init__(self, session: LMStudioSession) -> None:
        self._session = session

    def encode(self, text: str) -> list[int]:
        return self._session.tokenize(text) if text else []


def _echo(text: str) -> None:
    print(text, end="", flush=True)
