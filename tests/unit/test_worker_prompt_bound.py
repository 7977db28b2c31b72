"""The local upper bound of prompt tokens (workers.jobs.prompt_bound): no network."""

from __future__ import annotations

from workers.jobs.prompt_bound import chat_bound, text_bound
from workers.lmstudio.session import TemplateOverhead

OVERHEAD = TemplateOverhead(chat_base=20, per_message=5, text_base=1)


def _history(*texts: str) -> dict:  # type: ignore[type-arg]
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": t}]}
                         for t in texts]}


def test_no_bound_without_a_measured_template_or_with_tools() -> None:
    assert chat_bound(None, _history("hi"), has_tools=False) is None
    assert chat_bound(OVERHEAD, _history("hi"), has_tools=True) is None
    assert text_bound(None, "hi") is None


def test_bound_covers_every_byte_and_twice_the_template() -> None:
    text = "x" * 1000
    bound = chat_bound(OVERHEAD, _history(text), has_tools=False)
    assert bound is not None and bound >= 1000 + 2 * OVERHEAD.chat_base
    two = chat_bound(OVERHEAD, _history(text, text), has_tools=False)
    assert two is not None and two >= 2000 + 2 * (OVERHEAD.chat_base + OVERHEAD.per_message)
    assert text_bound(OVERHEAD, text) == 1000 + 2 * OVERHEAD.text_base + 2


def test_multibyte_text_counts_bytes_not_characters() -> None:
    text = "数" * 100  # 3 UTF-8 bytes each; a tokenizer may spend a token per byte
    assert text_bound(OVERHEAD, text) >= 300  # type: ignore[operator]
    assert chat_bound(OVERHEAD, _history(text), has_tools=False) >= 300  # type: ignore[operator]
