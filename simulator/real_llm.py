"""One llama.cpp server (xllamacpp) per GGUF file, run in-process.

`xllamacpp.Server` runs llama.cpp's own server code inside this process: continuous
batching over `slots` parallel sequences, and a private HTTP listener on 127.0.0.1 (a free
port) that we use only for the cheap, stateless calls (`/tokenize`, `/apply-template`).
Generation goes through `Server.handle_completions(body, callback)` in a worker thread:
llama.cpp calls `callback(chunk)` once per streamed chunk (one token, or a few when a UTF-8
character spans tokens) and stops the task — freeing its slot — as soon as the callback
returns True. That is how a cancel, a stop string or maxTokens ends a generation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx

from simulator.real_settings import RealEngineConfig

ChunkCallback = Callable[[dict[str, Any]], bool]
_HTTP_TIMEOUT_S = 30.0


class LlamaError(RuntimeError):
    """llama.cpp refused a request (the message is its own)."""


class LlamaModel:
    """A loaded GGUF: template, tokenizer and streamed completions."""

    def __init__(self, gguf_path: str, settings: RealEngineConfig, slots: int) -> None:
        import xllamacpp as xlc

        params = xlc.CommonParams()
        params.model.path = gguf_path
        params.n_parallel = max(1, slots)
        params.n_ctx = settings.context_length * params.n_parallel  # split evenly per slot
        params.cpuparams.n_threads = settings.threads
        params.cpuparams_batch.n_threads = settings.threads
        params.verbosity = settings.llama_log_verbosity
        if settings.prompt_cache_mib is not None:
            params.cache_ram_mib = settings.prompt_cache_mib
        params.warmup = False
        self.gguf_path = gguf_path
        self.slots = params.n_parallel
        self._server = xlc.Server(params)
        self._http = httpx.Client(base_url=self._server.listening_address,
                                  timeout=_HTTP_TIMEOUT_S)
        self._lock = threading.Lock()  # httpx.Client is not documented thread-safe

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            response = self._http.post(path, json=body)
        if response.status_code != 200:
            raise LlamaError(f"llama.cpp {path}: {response.status_code} {response.text[:300]}")
        result: dict[str, Any] = response.json()
        return result

    def apply_template(self, messages: list[dict[str, str]]) -> str:
        """The model's own chat template (from its GGUF), with the assistant turn opened."""
        return str(self._post("/apply-template", {"messages": messages})["prompt"])

    def tokenize(self, text: str) -> list[int]:
        """Token ids exactly as a prompt is fed (special tokens in the text are parsed)."""
        return [int(t) for t in self._post("/tokenize", {"content": text,
                                                          "add_special": True})["tokens"]]

    def complete(self, body: dict[str, Any], on_chunk: ChunkCallback) -> None:
        """Stream a raw-prompt completion (blocking; run it in a thread)."""
        result = self._server.handle_completions({**body, "stream": True}, on_chunk)
        if isinstance(result, dict) and ("error" in result or "code" in result):
            raise LlamaError(str(result.get("error") or result))

    def close(self) -> None:
        self._http.close()
        server, self._server = self._server, None
        del server  # the destructor stops llama.cpp's loop and frees the model
