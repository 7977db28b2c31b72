"""Error payloads shaped the way LM Studio sends them (SerializedLMSExtendedError)."""

from __future__ import annotations

from typing import Any


class SimError(Exception):
    """Raised by handlers; the connection turns it into rpcError / channelError."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("title", "error"))
        self.error = error


def model_not_found(query: Any) -> SimError:
    return SimError({
        "title": f"No model found that fits the query: {query}",
        "displayData": {"code": "generic.noModelMatchingQuery"},
    })


def kv_cache_oom(needed_bytes: int, free_bytes: int) -> SimError:
    return SimError({
        "title": "Failed to allocate KV cache: out of memory",
        "cause": f"KV cache needs {needed_bytes} bytes; {free_bytes} bytes of VRAM are free.",
        "suggestion": "Use a shorter prompt or maxTokens, or unload other models.",
        "errorData": {"neededBytes": needed_bytes, "freeBytes": free_bytes},
    })


def no_kv_cells(batch_tokens: int, free_cells: int, n_ctx: int) -> SimError:
    """llama.cpp's llama_decode failure when the unified KV cache has no room for a batch."""
    return SimError({
        "title": f"decode: failed to find a memory slot for batch of size {batch_tokens}",
        "cause": f"The KV cache has {free_cells} free cells of {n_ctx}; the other parallel "
                 "predictions hold the rest.",
        "suggestion": "Send fewer or shorter predictions at once, or load the model with a "
                      "larger context length.",
        "errorData": {"batchTokens": batch_tokens, "freeCells": free_cells, "nCtx": n_ctx},
    })


def load_oom(key: str, needed_bytes: int, free_bytes: int) -> SimError:
    return SimError({
        "title": f"Failed to load model \"{key}\": out of memory",
        "cause": f"Model weights and KV cache need {needed_bytes} bytes; {free_bytes} bytes "
                 "of VRAM are free.",
        "suggestion": "Unload other models or lower the GPU offload ratio.",
        "errorData": {"neededBytes": needed_bytes, "freeBytes": free_bytes},
    })


def context_overflow(prompt_tokens: int, context_length: int) -> SimError:
    return SimError({
        "title": (
            "The number of tokens to keep from the initial prompt is greater than the "
            f"context length (n_keep: {prompt_tokens} >= n_ctx: {context_length}). Try to "
            "load the model with a larger context length, or provide a shorter input."
        ),
        "errorData": {"promptTokens": prompt_tokens, "contextLength": context_length},
    })


def simulated(title: str) -> SimError:
    return SimError({"title": title, "cause": "Injected by the simulator's fault config."})
