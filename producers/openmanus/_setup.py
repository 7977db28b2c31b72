"""`use_lmstudio()`: put an LM Studio provider where OpenManus agents look for their LLM."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from producers.openmanus._base import LMStudioLLMBase
from producers.openmanus._compat import LLM
from workers.settings import Settings


def use_lmstudio(model: str | None = None, *, queued: bool = False,
                 settings: Settings | None = None, names: Iterable[str] = ("default",),
                 config_name: str = "default", **options: Any) -> LMStudioLLMBase:
    """Register an LM Studio provider in OpenManus' `LLM._instances`; returns it.

    Call it after importing OpenManus and before building agents, flows or tools (they take
    `LLM("default")` when they are constructed). `model`, `max_tokens` and `temperature`
    default to OpenManus' config.toml `[llm]` section (then LMQ_MODEL for the model); the
    host, broker and timeouts come from our settings (LMQ_* variables).

    queued=False: `LMStudioProvider`, direct to LM Studio at LMQ_LMSTUDIO_HOST.
    queued=True: `QueuedLMStudioProvider`, every call a job on the pool (`queue=` to reuse a
    JobQueue, `enqueue_anyway=True` to submit before a worker is up).
    `names`: also register under agent names (agents built with `llm=None` ask for
    `LLM(agent.name.lower())`). Other options go to the provider (`timeout_s`, `on_stats`, ...).
    """
    if queued:
        from producers.openmanus._queued import QueuedLMStudioProvider as cls
    else:
        from producers.openmanus._direct import LMStudioProvider as cls  # type: ignore[assignment]
    provider = cls(config_name, model=model, settings=settings, **options)
    for name in names:
        LLM._instances[name] = provider
    return provider


def registered_provider(name: str = "default") -> LMStudioLLMBase | None:
    """The LM Studio provider registered under `name`, if any."""
    provider = LLM._instances.get(name)
    return provider if isinstance(provider, LMStudioLLMBase) else None
