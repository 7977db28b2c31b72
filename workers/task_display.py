"""How jobs and results read in Flower and in task events: short, safe, stats first.

- `argsrepr(job)` is what producers pass as `send_task(..., argsrepr=argsrepr(job))`: the
  task events (and so Flower) then carry a one-line summary instead of a multi-megabyte
  prompt, and never a secret.
- `result_summary(result)` renders a result dict (or a cancelled job's partial result) with
  the prediction stats first and the content shortened: Flower's task page shows it.

Pure functions on plain dicts: no Celery, no Redis, no SDK.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

PREVIEW_CHARS = 60  # characters of a prompt or text shown
MAX_REPR_CHARS = 400  # hard cap of every summary line
SECRET = "***"

# A key names a secret by its words, not by a substring: `maxTokens` and `tokens_so_far` are
# counts, `api_key`, `accessToken` and `password` are secrets.
_SECRET_WORDS = {"secret", "password", "passwd", "authorization", "cookie", "credential",
                 "credentials", "apikey"}
_SECRET_LAST_WORDS = {"token", "key"}  # ...as the last word: access_token, api_key, key
_KEY_QUALIFIERS = {"api", "secret", "private", "access"}
_KEY_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SECRET_VALUE = re.compile(
    r"(sk-[A-Za-z0-9_-]{8,}|Bearer\s+\S+|[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@)"
)


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """`text` on one line, secrets masked, cut to `limit` characters with its full length."""
    # Mask a window well past the cut: never scan (or split) a multi-megabyte prompt.
    flat = " ".join(mask_secrets(text[: limit * 4 + 200]).split())
    if len(flat) <= limit and len(text) <= limit:
        return repr(flat)
    return f"{flat[:limit]!r}…({len(text):,} chars)"


def mask_secrets(text: str) -> str:
    """Replace API keys, bearer tokens and URL passwords inside free text."""
    return _SECRET_VALUE.sub(SECRET, text)


def _cap(text: str) -> str:
    return text if len(text) <= MAX_REPR_CHARS else text[: MAX_REPR_CHARS - 1] + "…"


def _message_text(message: Any) -> str:
    if not isinstance(message, Mapping):
        return str(message)
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: keep the text parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _messages_part(messages: Any) -> str:
    if isinstance(messages, str):
        return f"prompt={preview(messages)}"
    if isinstance(messages, Mapping):  # SDK chat-history dict
        messages = messages.get("messages") or []
    if not isinstance(messages, Sequence) or not messages:
        return "messages=?"
    last = messages[-1]
    role = last.get("role", "?") if isinstance(last, Mapping) else "?"
    return f"messages={len(messages)} last {role}={preview(_message_text(last))}"


def is_secret_key(key: str) -> bool:
    """Does a setting's name say its value is a secret (API key, token, password, ...)?"""
    words = [word.lower() for word in _KEY_WORDS.findall(key)]
    if any(word in _SECRET_WORDS for word in words):
        return True
    if not words or words[-1] not in _SECRET_LAST_WORDS:
        return False
    # `token`, `access_token`; `key` alone or `api_key`, but not `sort_key`.
    return words[-1] == "token" or len(words) == 1 or words[-2] in _KEY_QUALIFIERS


def _config_value(value: Any) -> str:
    """A config value as compact JSON, shortened (a JSON schema can be long)."""
    if isinstance(value, str):
        return preview(value, 30)
    text = json.dumps(value, separators=(",", ":"), default=str)
    return mask_secrets(text if len(text) <= 80 else text[:79] + "…")


def config_summary(config: Any) -> str:
    """The prediction config as sent, `config(maxTokens=64, temperature=0.6, ...)`: every
    key shown with its value (shortened); only secrets are masked."""
    if not isinstance(config, Mapping):
        return ""
    shown = []
    for key, value in config.items():
        if value is None:
            continue
        shown.append(f"{key}={SECRET if is_secret_key(str(key)) else _config_value(value)}")
    return f"config({', '.join(shown)})" if shown else ""


def argsrepr(job: Mapping[str, Any]) -> str:
    """One line describing a job dict, e.g. `chat model='m' messages=3 last user='Hi…'`."""
    if not isinstance(job, Mapping):
        return _cap(preview(str(job), MAX_REPR_CHARS))
    kind = job.get("kind", "?")
    parts = [str(kind), f"model={job.get('model')!r}"]
    if "messages" in job:
        parts.append(_messages_part(job["messages"]))
    if "prompt" in job:
        parts.append(f"prompt={preview(str(job['prompt']))}")
    if "texts" in job:
        texts = job["texts"] or []
        first = preview(str(texts[0]), 40) if texts else "''"
        parts.append(f"texts={len(texts)} first={first}")
    if job.get("tools"):
        names = [
            t.get("function", {}).get("name", "?") for t in job["tools"] if isinstance(t, dict)
        ]
        parts.append(f"tools={names[:5]}")
    if job.get("system_prompt"):
        parts.append(f"system={preview(str(job['system_prompt']), 30)}")
    parts.append(config_summary(job.get("config")))
    if job.get("batch_id"):
        parts.append(f"batch={job['batch_id']}")
    return _cap(" ".join(p for p in parts if p))


def _number(value: Any, fmt: str) -> str | None:
    return format(value, fmt) if isinstance(value, int | float) else None


def stats_line(result: Mapping[str, Any]) -> str:
    """The prediction stats and timing of a result as one readable line."""
    stats = result.get("stats") or {}
    timing = result.get("timing") or {}
    fields = [
        ("tok/s", _number(stats.get("tokens_per_second"), ".1f")),
        ("ttft", _seconds(stats.get("time_to_first_token_s"))),
        ("prompt tokens", _number(stats.get("prompt_tokens_count"), "d")),
        ("predicted tokens", _number(stats.get("predicted_tokens_count"), "d")),
        (
            "total tokens",
            _number(stats.get("total_tokens_count") or result.get("total_tokens"), "d"),
        ),
        ("stop", stats.get("stop_reason")),
        ("queue wait", _seconds(timing.get("queue_wait_s"))),
        ("run", _seconds(timing.get("run_s"))),
    ]
    return " · ".join(f"{name} {value}" for name, value in fields if value is not None)


def _seconds(value: Any) -> str | None:
    return f"{value:.3f} s" if isinstance(value, int | float) else None


def _content_line(result: Mapping[str, Any]) -> str:
    if "vectors" in result:
        done = result.get("completed", len(result.get("vectors") or []))
        return f"embeddings: {done} vectors × {result.get('dimension')} dims"
    content = result.get("content")
    line = f"content: {preview(str(content), 200)}" if content is not None else ""
    calls = [c.get("function", {}).get("name") for c in result.get("tool_calls") or []]
    return f"{line} tool calls: {calls}" if calls else line


def result_summary(result: Any, *, cancelled: bool = False) -> str:
    """A result dict rendered for humans: stats first, then the shortened content."""
    if not isinstance(result, Mapping):
        return _cap(preview(str(result), MAX_REPR_CHARS)) if result is not None else ""
    model = result.get("model") or {}
    model_key = model.get("model_key") if isinstance(model, Mapping) else model
    head = "CANCELLED, partial result" if cancelled or result.get("cancelled") else "result"
    lines = [
        f"{head} · {result.get('kind', '?')} · model {model_key} · "
        f"worker {result.get('worker')} · attempt {result.get('attempt', 1)}",
        stats_line(result),
        _content_line(result),
    ]
    return "\n".join(line for line in lines if line)


def progress_summary(meta: Any) -> str:
    """The PROGRESS meta (JobProgress) of a running job, one line."""
    if not isinstance(meta, Mapping):
        return "running"
    shown = [
        f"{key} {value}"
        for key, value in meta.items()
        if isinstance(value, int | float | str) and not is_secret_key(key)
    ]
    return _cap("progress: " + " · ".join(shown))
