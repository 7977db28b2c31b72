"""A job's PredictionConfig as the SDK config dict one prediction sends (camelCase keys).

The config already is the SDK's `LlmPredictionConfig` in plain JSON (`workers.contract`):
every key goes to LM Studio as given, checked once more against the SDK's schema at the
LM Studio boundary (`workers.lmstudio.prediction_config`). Added here: the job's tools in
OpenAI function format, as the SDK's `rawTools` value.

**Seed.** SDK 1.5's prediction config has no seed: LM Studio takes a seed only at model
load time (`llm.load.seed`). A worker serves one loaded model to many jobs, so a per-job
seed is *not applied* (reloading per job would stall every other job on the model). The
worker logs that it ignored it (`seed_note`); for repeatable output use temperature 0.
"""

from __future__ import annotations

from typing import Any

from workers.contract import PredictionConfig
from workers.error import InvalidJobError


def sdk_prediction_config(config: PredictionConfig,
                          raw_tools: dict[str, Any] | None = None) -> dict[str, Any]:
    """The SDK config dict for one prediction."""
    out = config.sdk_dict()
    if raw_tools is not None:
        if "rawTools" in out:
            raise InvalidJobError("the job has tools and config.rawTools: give the tools "
                                  "once, as the job's tools")
        out["rawTools"] = raw_tools
    return out


def seed_note(config: PredictionConfig) -> str | None:
    """A log line when the job asked for a seed that cannot be honoured per prediction."""
    if config.seed is None:
        return None
    return (f"seed={config.seed} not applied: LM Studio sets seeds at model load time "
            "(llm.load.seed), not per prediction")
