"""The worker's own check of a prediction config against the SDK's schema.

Producers check every config before sending it (`producers.prediction_config`, which also
reports unknown nested keys); this is the worker's second look for jobs that reached the
queue another way (an older producer, a raw `send_task`): a key the SDK does not know, or
a value its `LlmPredictionConfig` refuses, fails the job at once as InvalidJobError
instead of being dropped silently by the SDK or refused by LM Studio mid-prediction.
"""

from __future__ import annotations

from typing import Any

import msgspec
from lmstudio import LlmPredictionConfig, LMStudioValueError
from lmstudio._kv_config import prediction_config_to_kv_config_stack

from workers.contract import sdk_key
from workers.error import InvalidJobError


def checked_sdk_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` as the SDK parses it (camelCase keys); InvalidJobError if it is not one."""
    known = set(LlmPredictionConfig.__struct_encode_fields__)
    unknown = sorted(key for key in config if sdk_key(key) not in known)
    if unknown:
        raise InvalidJobError(
            f"unknown prediction config key(s) {unknown}: allowed are the SDK's "
            f"LlmPredictionConfig keys {sorted(known)}")
    try:
        parsed = dict(LlmPredictionConfig._from_any_dict(config).to_dict())
        prediction_config_to_kv_config_stack(None, parsed)  # type: ignore[arg-type]
        return parsed  # what respond() would send: it fails here, before admission
    except (msgspec.ValidationError, LMStudioValueError) as exc:
        raise InvalidJobError(f"invalid prediction config: {' '.join(str(exc).split())}"
                              ) from None
