"""OpenAI's `tool_choice` onto LM Studio's tool-use setting.

LM Studio's prediction config takes the tools as `rawTools`, the SDK's `LlmToolUseSetting`:
`{"type": "none"}`, or `{"type": "toolArray", "tools": [...], "force": bool}`, where `force`
makes the model call one of the tools given (LM Studio constrains the output to a tool
call). So:

    none / absent with no tools     no tools are sent
    auto (or absent)                the job's tools, as every producer sends them
                                    (as a batch file line's tool_choice too)
    required                        every tool, force: the model must call one
    {"type": "function", "function": {"name": N}}
                                    only N, force: the model must call N
    {"type": "allowed_tools", "allowed_tools": {"mode": "auto"|"required", "tools": [...]}}
                                    only the tools named; force when the mode is required
    {"type": "custom", ...}         400: LM Studio has function tools only

A forced choice goes to the worker as the job's `config.rawTools` (the SDK's own setting,
checked against its schema like any prediction config; `producers.forced_tools`, shared with
the OpenManus queued provider) instead of the job's `tools`, which have no place for `force`.
"""

from __future__ import annotations

from typing import Any

from producers.forced_tools import forced_config
from producers.gateway.errors import ApiError, bad_request
from workers.contract import ChatJob, Tool
from workers.error import InvalidJobError

CHOICES = ("none", "auto", "required", "{'type': 'function', 'function': {'name': ...}}",
           "{'type': 'allowed_tools', 'allowed_tools': {'mode': ..., 'tools': [...]}}")


def apply(job: ChatJob, choice: Any) -> ChatJob:
    """The job with `choice` applied; ApiError 400 naming what LM Studio cannot do."""
    if choice is None or choice == "auto":
        return job
    if choice == "none":
        return job.model_copy(update={"tools": None})
    tools = job.tools or []
    if choice == "required":
        return _forced(job, tools, force=True, asked="'required'")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function":
            name = (choice.get("function") or {}).get("name")
            return _forced(job, _named(tools, [name]), force=True,
                           asked=f"function {name!r}")
        if kind == "allowed_tools":
            return _allowed(job, tools, choice.get("allowed_tools"))
        if kind == "custom":
            raise bad_request("tool_choice type 'custom' is not supported: LM Studio calls "
                              "function tools only (give the tool as type 'function')",
                              "tool_choice")
    raise bad_request(f"tool_choice {choice!r} is not supported: use one of "
                      f"{', '.join(CHOICES)}", "tool_choice")


def _allowed(job: ChatJob, tools: list[Tool], allowed: Any) -> ChatJob:
    mode = allowed.get("mode") if isinstance(allowed, dict) else None
    listed = allowed.get("tools") if isinstance(allowed, dict) else None
    if mode not in ("auto", "required") or not isinstance(listed, list) or not listed:
        raise bad_request("tool_choice.allowed_tools needs mode 'auto' or 'required' and a "
                          "non-empty list of tools ({'type': 'function', 'function': "
                          "{'name': ...}})", "tool_choice")
    names = [(t.get("function") or {}).get("name") if isinstance(t, dict) else None
             for t in listed]
    return _forced(job, _named(tools, names), force=mode == "required",
                   asked=f"allowed_tools ({mode})")


def _named(tools: list[Tool], names: list[Any]) -> list[Tool]:
    known = {tool.function.name: tool for tool in tools}
    for name in names:
        if not isinstance(name, str) or not name:
            raise bad_request("tool_choice names a function by function.name", "tool_choice")
        if name not in known:
            raise bad_request(f"tool_choice names {name!r}, which is not in tools "
                              f"({', '.join(known) or 'none given'})", "tool_choice")
    return [known[name] for name in dict.fromkeys(names)]


def _forced(job: ChatJob, tools: list[Tool], *, force: bool, asked: str) -> ChatJob:
    if not tools:
        raise bad_request(f"tool_choice {asked} needs tools: give them in `tools`",
                          "tool_choice")
    if not force:  # a subset, sent as the job's tools like any other
        return job.model_copy(update={"tools": tools})
    try:
        config = forced_config(job.config, tools)
    except InvalidJobError as exc:
        raise ApiError(400, f"tools: {exc}", param="tools") from None
    return job.model_copy(update={"tools": None, "config": config})

