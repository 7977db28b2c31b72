"""A job whose model must call one of its tools: LM Studio's `rawTools` with `force`.

A job's `tools` (OpenAI function format) have no place for "must call one"; LM Studio's own
tool-use setting does: `{"type": "toolArray", "tools": [...], "force": true}` constrains the
output to a tool call. Both the gateway's `tool_choice` (`required`, a named function,
`allowed_tools` in mode `required`) and the OpenManus queued provider's `required` send the
tools that way, through `forced_config`, so the worker receives them as `config.rawTools`
(and counts them as prompt tokens like the job's tools).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from producers.prediction_config import checked_config
from workers.contract import PredictionConfig, Tool


def forced_config(config: PredictionConfig, tools: Sequence[Tool]) -> PredictionConfig:
    """`config` with `tools` as LM Studio's forced `rawTools`; the job then carries no
    `tools` of its own (the worker refuses both). InvalidJobError for a bad tool."""
    setting = {"type": "toolArray", "tools": [lmstudio_tool(t) for t in tools], "force": True}
    return checked_config({**config.sdk_dict(), "rawTools": setting, "seed": config.seed})


def lmstudio_tool(tool: Tool) -> dict[str, Any]:
    """A tool as LM Studio's toolArray lists it (what the worker makes of a job's tools)."""
    spec: dict[str, Any] = {"name": tool.function.name,
                            "parameters": tool.function.parameters}
    if tool.function.description:
        spec["description"] = tool.function.description
    return {"type": "function", "function": spec}
