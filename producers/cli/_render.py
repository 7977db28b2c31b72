"""Human-readable lines for results, stats and job states."""

from __future__ import annotations

from typing import Any

from workers.contract import EmbeddingResult


def _fmt(value: float | None, unit: str, digits: int = 3) -> str:
    return f"?{unit}" if value is None else f"{value:.{digits}f}{unit}"


def stats_line(result: Any) -> str:
    """One line of prediction stats and timing: tokens/s, first token, tokens, stop, wait."""
    timing = result.timing
    wait = f"queue wait {_fmt(timing.queue_wait_s, ' s')}"
    if isinstance(result, EmbeddingResult):
        return (f"[{result.completed} vectors, dimension {result.dimension}, "
                f"{result.total_tokens} tokens, run {_fmt(timing.run_s, ' s')}, {wait}, "
                f"worker {result.worker}]")
    stats = result.stats
    return (f"[{_fmt(stats.tokens_per_second, ' tok/s', 1)}, first token "
            f"{_fmt(stats.time_to_first_token_s, ' s')}, tokens {stats.prompt_tokens_count} "
            f"prompt + {stats.predicted_tokens_count} predicted = {stats.total_tokens_count}, "
            f"stop {stats.stop_reason}, {wait}, worker {result.worker}]")


def result_text(result: Any) -> str:
    if isinstance(result, EmbeddingResult):
        head = ", ".join(f"{x:.4f}" for x in (result.vectors[0][:4] if result.vectors else []))
        return f"vector[0] = [{head}, ...]"
    text = result.content
    if getattr(result, "tool_calls", None):
        calls = "; ".join(f"{c.function.name}({c.function.arguments})" for c in result.tool_calls)
        text = f"{text}\n(tool calls: {calls})" if text else f"(tool calls: {calls})"
    return str(text)


def partial_text(partial: dict[str, Any] | None) -> str:
    if not partial:
        return "(no partial result: it was cancelled before it started)"
    if partial.get("kind") == "embedding":
        return f"({partial.get('completed', 0)} of the texts were embedded)"
    return str(partial.get("content", ""))
