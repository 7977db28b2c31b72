"""A job's prediction config, checked with the `lmstudio` SDK's own schema before it is sent.

Accepted: None, a dict in the SDK's camelCase keys, in snake_case, or with today's short
aliases (`workers.contract.PREDICTION_ALIASES`), a contract `PredictionConfig`, or an
`lmstudio.LlmPredictionConfig`. The result is a contract `PredictionConfig` holding what
the SDK's `LlmPredictionConfig.to_dict()` makes of it: what the worker sends to LM Studio.

The SDK's parser accepts more than its schema says, so three gaps are closed here, each
with the SDK's own definitions rather than a copy of them:

* msgspec ignores unknown keys: a key the parsed config dropped (at any depth) is reported
  with the names the SDK's struct has at that place;
* the generated models type maxTokens, topPSampling, minPSampling and repeatPenalty as
  `Any | <type> | bool` (the `Any` stands for zod's literal `false`): each value is checked
  against the field's annotation without that `Any`;
* a key its struct has but its wire mapping lacks (`raw` in SDK 1.5.0) would fail in
  `respond()`: that conversion runs here too, with `response_format=` as `respond()` takes it.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal, Union

import msgspec
from lmstudio import LlmPredictionConfig, LMStudioValueError
from lmstudio import __version__ as lms_version
from lmstudio._kv_config import prediction_config_to_kv_config_stack
from lmstudio.schemas import _snake_case_keys_to_camelCase
from pydantic import ValidationError

from workers.contract import PREDICTION_ALIASES, PredictionConfig
from workers.error import InvalidJobError

ConfigInput = PredictionConfig | LlmPredictionConfig | Mapping[str, Any] | None
_NOT_RECURSED = {"jsonSchema"}  # free-form JSON: the SDK passes it through untouched


def checked_config(config: ConfigInput, response_format: Any = None) -> PredictionConfig:
    """`config` as the SDK would send it; InvalidJobError naming a bad key or value."""
    contract = _contract(config)
    try:  # nested snake_case keys too, by the SDK's own rule (as its `from_dict` does)
        given = _snake_case_keys_to_camelCase(contract.sdk_dict())
    except LMStudioValueError as exc:  # e.g. "Lists of lists are not supported."
        raise InvalidJobError(f"invalid prediction config: {exc}") from None
    for key, value in given.items():
        _check_value(key, value)
    try:
        canonical = LlmPredictionConfig._from_any_dict(given).to_dict()
    except (msgspec.ValidationError, LMStudioValueError) as exc:
        raise InvalidJobError(f"invalid prediction config: {_msgspec_message(exc)}") from None
    _check_nothing_dropped(given, dict(canonical), ())
    structured = _sdk_sendable(dict(canonical), response_format)
    if response_format is not None:
        canonical["structured"] = structured
    return PredictionConfig.model_validate({**canonical, "seed": contract.seed})


def allowed_keys() -> list[str]:
    """The SDK's prediction-config keys (camelCase), in the SDK's order."""
    return list(LlmPredictionConfig.__struct_encode_fields__)


def _contract(config: ConfigInput) -> PredictionConfig:
    if config is None:
        return PredictionConfig()
    if isinstance(config, LlmPredictionConfig):
        return PredictionConfig.model_validate(config.to_dict())
    if isinstance(config, PredictionConfig):
        return config
    if not isinstance(config, Mapping):
        raise InvalidJobError(
            f"a prediction config is a dict or an lmstudio.LlmPredictionConfig, not "
            f"{type(config).__name__}")
    try:
        return PredictionConfig.model_validate(dict(config))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        reason = error["msg"].removeprefix("Value error, ")
        raise InvalidJobError(f"invalid prediction config: {where + ': ' if where else ''}"
                              f"{reason}") from None


def _check_value(key: str, value: Any) -> None:
    field_type = _field_types().get(key)
    if field_type is None:
        raise InvalidJobError(_unknown_key_message(key))
    try:
        msgspec.convert(value, field_type)
    except msgspec.ValidationError as exc:
        choices = _choices(field_type)
        allowed = f"; allowed: {', '.join(map(repr, choices))}" if choices else ""
        raise InvalidJobError(
            f"invalid prediction config: {key}: {_msgspec_message(exc)} (got {value!r:.60})"
            f"{allowed}") from None


def _choices(field_type: Any) -> tuple[Any, ...]:
    """The values of a Literal field (msgspec's enum error does not list them)."""
    literals = [arg for arg in typing.get_args(field_type) if typing.get_origin(arg) is Literal]
    return tuple(value for literal in literals for value in typing.get_args(literal))


def _unknown_key_message(key: str) -> str:
    keys = allowed_keys()
    close = difflib.get_close_matches(key, keys + list(PREDICTION_ALIASES), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (f"unknown prediction config key {key!r}: {hint}allowed are the SDK's "
            f"LlmPredictionConfig keys ({', '.join(keys)}; camelCase or snake_case), seed, "
            f"and the aliases {', '.join(PREDICTION_ALIASES)}")


@cache
def _field_types() -> dict[str, Any]:
    """camelCase key -> the field's annotation, without the generated models' `Any`."""
    hints = typing.get_type_hints(LlmPredictionConfig, include_extras=True)
    names = zip(LlmPredictionConfig.__struct_fields__,
                LlmPredictionConfig.__struct_encode_fields__, strict=True)
    return {wire: _without_any(hints[name]) for name, wire in names}


def _without_any(annotation: Any) -> Any:
    if typing.get_origin(annotation) not in (Union, types.UnionType):
        return annotation
    members = tuple(arg for arg in typing.get_args(annotation) if arg is not Any)
    return Union[members]  # noqa: UP007 (built at run time from a tuple)


def _msgspec_message(exc: Exception) -> str:
    """msgspec's "Expected `float` >= 0.0 - at `$.temperature`" as "temperature: expected..."."""
    text = " ".join(str(exc).split())
    message, _, where = text.partition(" - at `$")
    where = where.rstrip("`").lstrip(".")
    message = message[:1].lower() + message[1:]
    return f"{where}: {message}" if where else message


def _check_nothing_dropped(given: Mapping[str, Any], parsed: Mapping[str, Any],
                           path: tuple[str, ...]) -> None:
    """Every key given (at any depth) survived the SDK's parse: else it is not the SDK's."""
    for key, value in given.items():
        if value is None:
            continue
        where = (*path, str(key))
        if key not in parsed:
            allowed = _struct_keys_at(path)
            raise InvalidJobError(
                f"invalid prediction config: unknown key {'.'.join(where)!r}; allowed there: "
                f"{', '.join(allowed) or 'nothing'}")
        if key in _NOT_RECURSED:
            continue
        _compare(value, parsed[key], where)


def _compare(value: Any, parsed: Any, path: tuple[str, ...]) -> None:
    if isinstance(value, Mapping) and isinstance(parsed, Mapping):
        _check_nothing_dropped(value, parsed, path)
    elif isinstance(value, list | tuple) and isinstance(parsed, list | tuple):
        for index, (item, parsed_item) in enumerate(zip(value, parsed, strict=False)):
            _compare(item, parsed_item, (*path, str(index)))


def _struct_keys_at(path: tuple[str, ...]) -> list[str]:
    """The field names the SDK's struct has at `path` (list indexes skipped)."""
    info: Any = msgspec.inspect.type_info(LlmPredictionConfig)
    for part in path:
        if part.isdigit():
            continue
        info = _struct_of(info)
        field = next((f for f in getattr(info, "fields", ()) if f.encode_name == part), None)
        if field is None:
            return []
        info = field.type
    info = _struct_of(info)
    return [f.encode_name for f in getattr(info, "fields", ())]


def _struct_of(info: Any) -> Any:
    """The struct inside a union, list or metadata wrapper of msgspec's type info."""
    while True:
        if isinstance(info, msgspec.inspect.UnionType):
            info = next((t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)
                         and not isinstance(t, msgspec.inspect.AnyType)), info.types[0])
        elif isinstance(info, msgspec.inspect.ListType):
            info = info.item_type
        elif isinstance(info, msgspec.inspect.Metadata):
            info = info.type
        else:
            return info


def _sdk_sendable(config: dict[str, Any], response_format: Any) -> Any:
    """Run the conversion `respond(config=..., response_format=...)` runs before sending
    (a key the SDK cannot send fails here, not on the worker); return `structured`."""
    try:
        _, stack = prediction_config_to_kv_config_stack(response_format, config)  # type: ignore[arg-type]
    except (LMStudioValueError, msgspec.ValidationError, TypeError) as exc:
        message = " ".join(str(exc).split())
        if message.startswith("Unknown config settings"):
            raise InvalidJobError(
                f"invalid prediction config: {message}: the lmstudio SDK {lms_version} cannot "
                "send these to LM Studio; leave them out") from None
        raise InvalidJobError(
            f"invalid response_format: {message} (give a JSON schema dict or a pydantic "
            "model class)") from None
    for field in stack.to_dict()["layers"][0]["config"]["fields"]:
        if field["key"] == "llm.prediction.structured":
            return field["value"]
    return None
