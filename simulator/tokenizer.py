"""The one tokenizer behind countTokens, tokenize, prompt stats and fragment splitting.

A token is a run of word characters or a single other non-space character. Fragments
carry a token with its leading whitespace, so joining fragments rebuilds the text and
`count(text)` equals the number of fragments that produced it.
"""

from __future__ import annotations

import re
import zlib

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")
VOCAB_SIZE = 128_000
_FIRST_ID = 256  # keep low ids free, like real vocabularies' special tokens
START_ID, END_ID = 1, 2  # an embedding model's start/end tokens ([CLS] / [SEP])
SPECIAL_TOKENS = 2  # START_ID and END_ID: what an embedding model adds to count(text)


def count(text: str) -> int:
    return len(TOKEN_RE.findall(text))


def token_id(token: str) -> int:
    return _FIRST_ID + zlib.crc32(token.encode()) % (VOCAB_SIZE - _FIRST_ID)


def tokenize(text: str) -> list[int]:
    return [token_id(tok) for tok in TOKEN_RE.findall(text)]


def pieces(text: str) -> list[str]:
    """Split text into one-token pieces that concatenate back to it (bar trailing space)."""
    return PIECE_RE.findall(text)
