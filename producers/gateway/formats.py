"""The pool's results in OpenAI's response and stream-chunk formats, with `lmq_stats`.

Whole responses are the bodies batch output lines carry (`producers.batch._output`), so a
request answered over HTTP and the same request in a batch file look the same; `lmq_stats`
(LM Studio's prediction stats, timing, worker) is the one field OpenAI does not have.
"""

from __future__ import annotations

import time
from typing import Any

from producers.batch._output import FINISH_REASON, response_body
from producers.batch._store import RequestInfo

CHAT_CHUNK = "chat.completion.chunk"


def response(job_id: str, url: str, result: dict[str, Any]) -> dict[str, Any]:
    """The body OpenAI returns for `url`, for a finished job's result dict."""
    info = RequestInfo(job_id, "", url, 0, str(result["model"]["model_key"]))
    if result.get("kind") == "embedding" and result.get("vectors_base64"):
        return _base64_embeddings(result, response_body(info, {**result, "vectors": []}))
    return response_body(info, result)


def _base64_embeddings(result: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    body["data"] = [{"object": "embedding", "index": i, "embedding": vector}
                    for i, vector in enumerate(result["vectors_base64"])]
    return body


def finish_reason(result: dict[str, Any]) -> str:
    if result.get("tool_calls"):
        return "tool_calls"
    return FINISH_REASON.get((result.get("stats") or {}).get("stop_reason", ""), "stop")


class ChunkMaker:
    """Stream chunks of one job: chat.completion.chunk or text_completion."""

    def __init__(self, job_id: str, model: str, chat: bool) -> None:
        self.chat = chat
        self.base = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{job_id}",
                     "object": CHAT_CHUNK if chat else "text_completion",
                     "created": int(time.time()), "model": model,
                     "system_fingerprint": None}

    def _chunk(self, choice: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": 0, "logprobs": None,
                                          "finish_reason": None, **choice}], **extra}

    def first(self) -> dict[str, Any] | None:
        """The chat stream's opening chunk (role, empty content), as OpenAI sends it."""
        return self._chunk({"delta": {"role": "assistant", "content": ""}}) if self.chat \
            else None

    def text(self, text: str) -> dict[str, Any]:
        return self._chunk({"delta": {"content": text}} if self.chat else {"text": text})

    def tool_calls(self, calls: list[dict[str, Any]]) -> dict[str, Any]:
        return self._chunk({"delta": {"tool_calls": [{"index": i, **call}
                                                     for i, call in enumerate(calls)]}})

    def last(self, result: dict[str, Any]) -> dict[str, Any]:
        """The chunk with the finish reason; LM Studio's stats ride along in lmq_stats."""
        empty: dict[str, Any] = {"delta": {}} if self.chat else {"text": ""}
        body = response("", "/v1/chat/completions", result)
        return self._chunk({**empty, "finish_reason": finish_reason(result)},
                           lmq_stats=body["lmq_stats"])

    def usage(self, result: dict[str, Any]) -> dict[str, Any]:
        """The final chunk of `stream_options.include_usage`: no choices, the usage."""
        body = response("", "/v1/chat/completions", result)
        return {**self.base, "choices": [], "usage": body["usage"]}
