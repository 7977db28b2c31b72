"""Map a job's PredictionConfig onto the SDK 1.5 prediction config dict (camelCase keys).

| contract field | SDK key (`LlmPredictionConfigDict`) | server KV key                     |
| -------------- | ----------------------------------- | --------------------------------- |
| temperature    | temperature                         | llm.prediction.temperature        |
| max_tokens     | maxTokens                           | llm.prediction.maxPredictedTokens |
| top_p          | topPSampling                        | llm.prediction.topPSampling       |
| top_k          | topKSampling                        | llm.prediction.topKSampling       |
| stop           | stopStrings                         | llm.prediction.stopStrings        |
| json_schema    | structured {"type": "json", ...}    | llm.prediction.structured         |
| (job.tools)    | rawTools {"type": "toolArray", ...} | llm.prediction.tools              |

**Seed.** SDK 1.5's prediction config has no seed: LM Studio takes a seed only at model
load time (`llm.load.seed`). A worker serves one loaded model to many jobs, so a per-job
seed is *not applied* (reloading per job would stall every other job on the model). The
worker logs that it ignored it (`seed_note`); for repeatable output use temperature 0.
The SDK silently drops unknown keys, so nothing else may be added here without checking
`LlmPredictionConfigDict`.
"""

from __future__ import annotations

from typing import Any

from workers.contract import PredictionConfig


def sdk_prediction_config(config: PredictionConfig,
                          raw_tools: dict[str, Any] | None = None) -> dict[str, Any]:
    """The SDK config dict for one prediction."""
    out: dict[str, Any] = {}
    if config.temperature is not None:
        out["temperature"] = config.temperature
    if config.max_tokens is not None:
        out["maxTokens"] = config.max_tokens
    if config.top_p is not None:
        out["topPSampling"] = config.top_p
    if config.top_k is not None:
        out["topKSampling"] = config.top_k
    if config.stop:
        out["stopStrings"] = list(config.stop)
    if config.json_schema is not None:
        out["structured"] = {"type": "json", "jsonSchema": config.json_schema}
    if raw_tools is not None:
        out["rawTools"] = raw_tools
    return out


def seed_note(config: PredictionConfig) -> str | None:
    """A log line when the job asked for a seed that cannot be honoured per prediction."""
    if config.seed is None:
        return None
    return (f"seed={config.seed} not applied: LM Studio sets seeds at model load time "
            "(llm.load.seed), not per prediction")
