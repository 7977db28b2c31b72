"""OpenManus on LM Studio: a direct provider, a queued provider, background agent steps.

    from producers.openmanus import use_lmstudio
    use_lmstudio()                 # before building agents; queued=True to go through the pool
    agent = ToolCallAgent(...)     # picks the provider up from OpenManus' LLM registry

`config_snippet` does not import OpenManus; everything else needs it importable as `app`
(ops/setup installs openmanus==0.1.0). See README.md in this folder.
"""

from __future__ import annotations

from typing import Any

from producers.openmanus._config import config_snippet

__all__ = [
    "CallRecord",
    "LMStudioProvider",
    "QueuedLMStudioProvider",
    "TokenLimitError",
    "TokenLimitExceeded",
    "collect_step",
    "config_snippet",
    "finish_step",
    "step_ready",
    "submit_step",
    "use_lmstudio",
]

_LAZY = {
    "CallRecord": "producers.openmanus._base",
    "LMStudioProvider": "producers.openmanus._direct",
    "QueuedLMStudioProvider": "producers.openmanus._queued",
    "collect_step": "producers.openmanus._step",
    "finish_step": "producers.openmanus._step",
    "step_ready": "producers.openmanus._step",
    "submit_step": "producers.openmanus._step",
    "TokenLimitError": "producers.openmanus._base",
    "TokenLimitExceeded": "producers.openmanus._compat",
    "use_lmstudio": "producers.openmanus._setup",
}


def __getattr__(name: str) -> Any:
    # Lazy so that `config_snippet` (used by `lmq models`) works without OpenManus installed.
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
