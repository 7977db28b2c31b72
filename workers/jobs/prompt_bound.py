"""A local upper bound of a prompt's tokens, so that short prompts skip LM Studio's count.

Counting a prompt exactly costs two RPCs per chat job (`applyPromptTemplate`, then
`countTokens`) before the prediction can start. For most prompts the answer does not
matter: they are far below the context length. So a job first computes an upper bound here,
locally, and asks LM Studio only when that bound is near a limit (`workers.jobs.chat`):

* **Text.** Every token of a byte-level BPE or SentencePiece (byte-fallback) tokenizer
  covers at least one UTF-8 byte, so a text has at most as many tokens as bytes. The bound
  takes the bytes of the whole history serialised as JSON (roles, keys and quotes
  included), which is more than its text.
* **Template.** What the model's prompt template and tokenizer add around the text (BOS,
  role headers, a default system prompt) is measured once per worker at start-up
  (`Session.measure_overhead`, 4 RPCs) and counted twice here, as a margin.
* **Tools.** Templates render tool definitions with prose of their own: a job with tools
  (or an unmeasured template) has no local bound and is always counted by LM Studio.

Guarantees (enforced in `workers.jobs.chat.prompt_tokens`): the bound is used only when it is at
most `LMQ_LOCAL_COUNT_MAX_TOKENS` and bound + max_tokens fits the context; otherwise LM
Studio counts exactly and a prompt over the context fails at once with
ContextOverflowError, as before. Admission gets the bound, which is never below the exact
count (it over-reserves at most `LMQ_LOCAL_COUNT_MAX_TOKENS` tokens of KV for a job).
Results always carry LM Studio's exact `prompt_tokens_count` from the prediction stats.
"""

from __future__ import annotations

import json
from typing import Any

from workers.lmstudio.session import TemplateOverhead


def chat_bound(overhead: TemplateOverhead | None, history: dict[str, Any],
               has_tools: bool) -> int | None:
    """Upper bound of a chat's prompt tokens, or None when only LM Studio can tell."""
    if overhead is None or has_tools:
        return None
    messages = len(history.get("messages", []))
    template = overhead.chat_base + overhead.per_message * max(0, messages - 1)
    return 2 * template + _utf8_len(json.dumps(history, ensure_ascii=False))


def text_bound(overhead: TemplateOverhead | None, text: str) -> int | None:
    """Upper bound of a completion prompt's tokens, or None when only LM Studio can tell."""
    if overhead is None:
        return None
    return 2 * overhead.text_base + 2 + _utf8_len(text)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))
