"""`[real]` in the simulator config: knobs of the real-model engine (`engine = "real"`).

Kept apart from `config.py` so the real engine's settings change without touching the
deterministic simulator's schema; `config.SimConfig.real` holds one of these.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RealEngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    threads: int = Field(
        default=1, ge=1,
        description="llama.cpp and embedding threads. llama.cpp threads spin while they wait, "
                    "so keep 1 on a shared or loaded machine; raise it on an idle one.")
    context_length: int = Field(
        default=2048, ge=256,
        description="Context per prediction slot (the loaded contextLength of the llm).")
    temperature: float = Field(
        default=0.7, ge=0.0,
        description="Sampling temperature (the LM Studio request's temperature is not "
                    "forwarded; 0 = greedy).")
    prompt_cache_mib: int | None = Field(
        default=None, ge=0,
        description="llama.cpp's host-memory prompt cache across slots (its cache_ram_mib); "
                    "None keeps llama.cpp's default (8192 MiB), 0 turns it off (each slot "
                    "still reuses the prefix it holds). ops/bench_real_engine.py sets 0 so "
                    "that a prompt one side of the comparison sent is not cached for the "
                    "other.")
    llama_log_verbosity: int = Field(
        default=-1, description="llama.cpp log verbosity (-1 quiet, 3 debug).")
