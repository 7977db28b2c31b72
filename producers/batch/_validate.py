"""Validate a whole batch file before anything is enqueued."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from producers.batch._request import BatchRequest, LineError, parse_line
from producers.job_building import check_limits
from workers.error import InvalidJobError
from workers.settings import Settings

MAX_SHOWN_ERRORS = 50


@dataclass
class Validation:
    requests: list[BatchRequest] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.requests)

    def report(self, limit: int = MAX_SHOWN_ERRORS) -> str:
        shown = [f"line {line}: {message}" for line, message in self.errors[:limit]]
        if len(self.errors) > limit:
            shown.append(f"... and {len(self.errors) - limit} more bad lines")
        if not self.errors and not self.requests:
            shown.append("the file has no requests")
        return "\n".join(shown)


def validate_file(path: Path, model_map: dict[str, str] | None = None) -> Validation:
    """Every line checked; duplicate custom_ids are errors naming the first line."""
    result = Validation()
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                request = parse_line(text, number, model_map or {})
            except LineError as exc:
                result.errors.append((number, str(exc)))
                continue
            if request.custom_id in first_line:
                result.errors.append((number, f"duplicate custom_id {request.custom_id!r} "
                                              f"(first on line {first_line[request.custom_id]})"))
                continue
            first_line[request.custom_id] = number
            result.requests.append(request)
    return result


def check_sizes(validation: Validation, settings: Settings) -> None:
    """The size limits `JobQueue.submit` checks (LMQ_MAX_PROMPT_CHARS, LMQ_MAX_EMBED_TEXTS),
    as errors of their lines: with them, the requests need no check at submit (`checked`)."""
    kept = []
    for request in validation.requests:
        try:
            check_limits(request.job, settings)
        except InvalidJobError as exc:
            validation.errors.append((request.line, str(exc)))
        else:
            kept.append(request)
    validation.requests = kept
    validation.errors.sort()


def parse_model_map(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """['gpt-4o=llama-3.2-1b-instruct', ...] -> {'gpt-4o': 'llama-3.2-1b-instruct'}."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source or not target:
            raise ValueError(f"--model-map wants NAME=MODEL, got {pair!r}")
        mapping[source] = target
    return mapping
