"""Build and validate jobs before anything is sent.

Every user mistake becomes an `InvalidJobError` whose message says what was wrong, so the
CLI can print it as one line and the Python API fails before touching the broker.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from workers.celery_config import PRIORITIES
from workers.contract import (
    TENANT_PATTERN,
    ChatJob,
    CompletionJob,
    EmbeddingJob,
    Job,
    PredictionConfig,
)
from workers.error import InvalidJobError
from workers.settings import Settings

if TYPE_CHECKING:
    from producers.prediction_config import ConfigInput

JOB_FOR_KIND: dict[str, type[ChatJob] | type[CompletionJob] | type[EmbeddingJob]] = {
    "chat": ChatJob,
    "completion": CompletionJob,
    "embedding": EmbeddingJob,
}


def readable(exc: ValidationError, what: str) -> str:
    """One line naming each bad field and why, e.g. `config.temperature: must be <= 5`."""
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or what
        problems.append(f"{where}: {error['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return f"invalid {what}: " + "; ".join(problems) + more


def make_config(config: ConfigInput, response_format: Any = None) -> PredictionConfig:
    """The SDK's prediction config, checked with the SDK's schema (`prediction_config`)."""
    # The SDK is imported with the first job (~0.3 s), not by `import producers`.
    from producers.prediction_config import checked_config

    return checked_config(config, response_format)


class CheckedConfigs:
    """`make_config` once per distinct config of one submission: a batch's jobs mostly share
    one, and its check against the SDK's schema (~26 us) was ~70% of preparing a job. Only
    plain data (dicts, lists, strings, numbers) and contract configs are told apart by
    value; anything else is checked each time."""

    def __init__(self) -> None:
        self._checked: dict[Hashable, PredictionConfig] = {}

    def check(self, config: ConfigInput) -> PredictionConfig:
        try:
            key = (type(config).__name__, _value_key(
                config.model_dump() if isinstance(config, PredictionConfig) else config))
        except _NotPlainError:
            return make_config(config)
        if key not in self._checked:
            self._checked[key] = make_config(config)
        return self._checked[key]


class _NotPlainError(Exception):
    pass


def _value_key(value: Any) -> Hashable:
    """Hashable, and equal only for equal plain data of the same types (1, 1.0 and True
    differ, as lists and tuples do)."""
    if value is None or type(value) in (str, int, float, bool):
        return (type(value), value)
    if type(value) is dict and all(type(key) is str for key in value):
        return (dict, tuple((key, _value_key(item)) for key, item in value.items()))
    if type(value) in (list, tuple):
        return (type(value), tuple(_value_key(item) for item in value))
    raise _NotPlainError


def make_job(kind: str, fields: dict[str, Any], configs: CheckedConfigs | None = None) -> Job:
    """Validate `fields` as a job of `kind` (chat, completion, embedding); `configs`: its
    submission's configs checked so far (`JobQueue.prepare`)."""
    cls = JOB_FOR_KIND.get(kind)
    if cls is None:
        raise InvalidJobError(f"unknown job kind {kind!r}: use one of {sorted(JOB_FOR_KIND)}")
    if kind != "embedding" and fields.get("config") is not None:
        config = fields["config"]
        fields = {**fields, "config": configs.check(config) if configs is not None
                                 else make_config(config)}
    if kind == "chat" and fields.get("messages") is not None:
        from producers.chat_input import chat_messages  # the SDK, with the first job

        fields = {**fields, "messages": chat_messages(fields["messages"])}
    try:
        return cls.model_validate(fields)
    except ValidationError as exc:
        raise InvalidJobError(readable(exc, f"{kind} job")) from None


def coerce_job(job: Job | dict[str, Any], configs: CheckedConfigs | None = None) -> Job:
    """Accept a contract object or a plain dict with a `kind` (default chat)."""
    if isinstance(job, ChatJob | CompletionJob):
        # Built by hand: its config has not met the SDK's schema yet.
        config = (configs.check(job.config) if configs is not None
                  else make_config(job.config))
        return job.model_copy(update={"config": config})
    if isinstance(job, EmbeddingJob):
        return job
    if not isinstance(job, dict):
        raise InvalidJobError(f"a job must be a ChatJob, CompletionJob, EmbeddingJob or dict, "
                              f"not {type(job).__name__}")
    return make_job(str(job.get("kind", "chat")), job, configs)


def check_priority(priority: str | None) -> None:
    """None (keep each job's) or one of PRIORITIES, else InvalidJobError."""
    if priority is not None and priority not in PRIORITIES:
        raise InvalidJobError(f"unknown priority {priority!r}: use one of "
                              f"{', '.join(PRIORITIES)}")


def check_tenant(tenant: str | None) -> None:
    """None or a tenant label (letters, digits, . _ @ -; at most 64), else InvalidJobError."""
    if tenant is not None and not re.match(TENANT_PATTERN, tenant):
        raise InvalidJobError(f"tenant {tenant!r}: use letters, digits and . _ @ - "
                              "(at most 64, starting with a letter or digit)")


def check_deadlines(**deadlines_s: float | None) -> dict[str, float]:
    """The deadlines given (expires_s, time_limit_s), each a positive number of seconds."""
    given = {name: value for name, value in deadlines_s.items() if value is not None}
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise InvalidJobError(f"{name} must be a positive number of seconds, got {value!r}")
    return {name: float(value) for name, value in given.items()}


def prompt_chars(job: Job) -> int:
    if isinstance(job, CompletionJob):
        return len(job.prompt)
    if isinstance(job, EmbeddingJob):
        return sum(len(text) for text in job.texts)
    if isinstance(job.messages, str):
        return len(job.messages) + len(job.system_prompt or "")
    return len(str(job.messages)) + len(job.system_prompt or "")


def check_limits(job: Job, settings: Settings) -> None:
    """Size limits from settings, checked before sending (the worker checks them again)."""
    if isinstance(job, EmbeddingJob) and len(job.texts) > settings.max_embed_texts:
        raise InvalidJobError(
            f"an embedding job may carry at most {settings.max_embed_texts} texts, got "
            f"{len(job.texts)}: split it (or raise LMQ_MAX_EMBED_TEXTS)")
    chars = prompt_chars(job)
    if chars > settings.max_prompt_chars:
        raise InvalidJobError(
            f"the prompt has {chars} characters, more than the limit of "
            f"{settings.max_prompt_chars} (LMQ_MAX_PROMPT_CHARS)")
