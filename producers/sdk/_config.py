"""A prediction request as the SDK takes it -> what `JobQueue` takes.

The SDK's `config=` (an `LlmPredictionConfig`, or a dict in camelCase or snake_case) and
`response_format=` (a JSON-schema dict, a class with `model_json_schema()` such as a pydantic
model or `lms.BaseModel`, or an `LlmStructuredPredictionSetting`) are folded into one
`LlmPredictionConfig`, validated by the SDK's own schema: that object is also what the result
reports as `prediction_config`.

`JobQueue` (today) takes the pool's short config keys, so `job_config()` maps the SDK keys the
pool carries onto them and refuses the others by name, before anything is queued. Chats go to
the job as the SDK's chat-history dict, which the worker hands to `lms.Chat.from_history`.
"""

from __future__ import annotations

from typing import Any

import lmstudio as lms
import msgspec
from lmstudio._sdk_models import LlmStructuredPredictionSetting

from producers.sdk._errors import InvalidRequestError

SdkConfig = lms.LlmPredictionConfig | dict[str, Any] | None

# SDK key (camelCase) -> the pool's PredictionConfig field.
_POOL_KEYS = {"temperature": "temperature", "maxTokens": "max_tokens",
              "topPSampling": "top_p", "topKSampling": "top_k", "stopStrings": "stop"}
_SDK_KEYS = frozenset(lms.LlmPredictionConfig.__struct_encode_fields__)


def prediction_config(config: SdkConfig, response_format: Any = None) -> lms.LlmPredictionConfig:
    """The SDK config of one prediction, with `response_format` as its `structured` setting."""
    parsed = _parse(config)
    if response_format is None:
        return parsed
    if parsed.structured is not None:
        raise InvalidRequestError("give the output format once: either response_format= "
                                  "or 'structured' in config, not both")
    parsed.structured = structured_setting(response_format)
    return parsed


def structured_setting(response_format: Any) -> LlmStructuredPredictionSetting:
    """`response_format` as the SDK documents it, as a structured-prediction setting."""
    if isinstance(response_format, LlmStructuredPredictionSetting):
        return response_format
    if isinstance(response_format, type) and hasattr(response_format, "model_json_schema"):
        return LlmStructuredPredictionSetting(
            type="json", json_schema=response_format.model_json_schema())
    if isinstance(response_format, dict) and response_format.get("type") in {"json", "gbnf"} \
            and ("jsonSchema" in response_format or "gbnfGrammar" in response_format):
        return LlmStructuredPredictionSetting._from_any_dict(response_format)
    if isinstance(response_format, dict) and "type" in response_format:
        return LlmStructuredPredictionSetting(type="json", json_schema=response_format)
    raise InvalidRequestError("response_format must be a JSON schema dict or a class with "
                              "model_json_schema() (a pydantic model), not "
                              f"{response_format!r:.80}")


def job_config(config: lms.LlmPredictionConfig) -> dict[str, Any]:
    """The pool's job config for an SDK config; keys the pool cannot carry are refused."""
    out: dict[str, Any] = {}
    for key, value in config.to_dict().items():
        if key in _POOL_KEYS:
            out[_POOL_KEYS[key]] = value
        elif key == "structured":
            out["json_schema"] = _json_schema(value)
        else:
            raise InvalidRequestError(
                f"config key {key!r} is not carried by the pool's jobs yet; it carries "
                f"{', '.join([*_POOL_KEYS, 'structured'])}")
    if out.get("max_tokens") is False:  # the SDK's "no limit"
        del out["max_tokens"]
    return out


def _json_schema(structured: dict[str, Any]) -> dict[str, Any]:
    if structured.get("type") != "json" or not isinstance(structured.get("jsonSchema"), dict):
        raise InvalidRequestError("the pool's jobs carry JSON-schema structured output only "
                                  f"(type 'json' with a jsonSchema), not {structured!r:.80}")
    return dict(structured["jsonSchema"])


def _parse(config: SdkConfig) -> lms.LlmPredictionConfig:
    if config is None:
        return lms.LlmPredictionConfig()
    if isinstance(config, lms.LlmPredictionConfig):
        return msgspec.structs.replace(config)  # a copy: we may set `structured`
    if not isinstance(config, dict):
        raise InvalidRequestError(f"config must be an LlmPredictionConfig or a dict of its "
                                  f"keys, not {type(config).__name__}")
    _check_keys(config)
    try:
        return lms.LlmPredictionConfig._from_any_dict(config)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"invalid prediction config: {exc}") from None


def _check_keys(config: dict[str, Any]) -> None:
    """The SDK drops unknown keys silently; a typo here would be a setting never applied."""
    unknown = sorted(key for key in config if _camel(key) not in _SDK_KEYS)
    if unknown:
        raise InvalidRequestError(
            f"unknown prediction config key(s) {', '.join(map(repr, unknown))}: use the keys "
            f"of lmstudio.LlmPredictionConfig ({', '.join(sorted(_SDK_KEYS))})")


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)
