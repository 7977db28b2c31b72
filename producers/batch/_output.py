"""Our results in OpenAI's batch output and error line formats (plus body.lmq_stats)."""

from __future__ import annotations

from typing import Any

from producers.batch._store import RequestInfo
from workers.error import BadJobError, JobCancelledError

FINISH_REASON = {
    "eosFound": "stop", "stopStringFound": "stop", "userStopped": "stop",
    "maxPredictedTokensReached": "length", "contextLengthReached": "length",
    "toolCalls": "tool_calls",
}


def output_line(info: RequestInfo, result: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"batch_req_{info.job_id}", "custom_id": info.custom_id,
            "response": {"status_code": 200, "request_id": info.job_id,
                         "body": response_body(info, result)},
            "error": None}


def error_line(info: RequestInfo, state: str, error: Any) -> dict[str, Any]:
    if isinstance(error, JobCancelledError):
        partial = error.partial
        body = response_body(info, partial) if partial else None
        return {"id": f"batch_req_{info.job_id}", "custom_id": info.custom_id,
                "response": {"status_code": 499, "request_id": info.job_id, "body": body},
                "error": {"code": "batch_cancelled", "message": str(error)}}
    status, kind = (400, "invalid_request_error") if isinstance(error, BadJobError) \
        else (500, "server_error")
    body = {"error": {"message": str(error), "type": kind, "param": None,
                      "code": type(error).__name__}}
    return {"id": f"batch_req_{info.job_id}", "custom_id": info.custom_id,
            "response": {"status_code": status, "request_id": info.job_id, "body": body},
            "error": None}


def response_body(info: RequestInfo, result: dict[str, Any]) -> dict[str, Any]:
    kind = result.get("kind")
    if kind == "embedding":
        return _embedding_body(info, result)
    created = int(result["timing"]["finished_at"])
    stats = result.get("stats") or {}
    common = {"created": created, "model": result["model"]["model_key"],
              "usage": _usage(stats), "lmq_stats": _lmq_stats(result)}
    reason = FINISH_REASON.get(stats.get("stop_reason", ""), "stop")
    if kind == "completion":
        choice = {"index": 0, "text": result["content"], "logprobs": None,
                  "finish_reason": reason}
        return {"id": f"cmpl-{info.job_id}", "object": "text_completion",
                "choices": [choice], **common}
    return {"id": f"chatcmpl-{info.job_id}", "object": "chat.completion",
            "choices": [_chat_choice(result, reason)], **common}


def _chat_choice(result: dict[str, Any], reason: str) -> dict[str, Any]:
    tool_calls = result.get("tool_calls") or []
    message: dict[str, Any] = {"role": "assistant", "content": result.get("content") or None,
                               "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
        reason = "tool_calls"
    elif message["content"] is None:
        message["content"] = ""
    return {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}


def _usage(stats: dict[str, Any]) -> dict[str, int]:
    prompt = stats.get("prompt_tokens_count") or 0
    completion = stats.get("predicted_tokens_count") or 0
    total = stats.get("total_tokens_count") or prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _lmq_stats(result: dict[str, Any]) -> dict[str, Any]:
    return {"stats": result.get("stats"), "timing": result.get("timing"),
            "worker": result.get("worker"), "attempt": result.get("attempt"),
            "model": result.get("model"), "cancelled": result.get("cancelled", False)}


def _embedding_body(info: RequestInfo, result: dict[str, Any]) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(result.get("vectors") or [])]
    total = result.get("total_tokens") or 0
    stats = _lmq_stats(result)
    stats.update(token_counts=result.get("token_counts"), dimension=result.get("dimension"))
    return {"object": "list", "data": data, "model": result["model"]["model_key"],
            "usage": {"prompt_tokens": total, "total_tokens": total}, "lmq_stats": stats}
