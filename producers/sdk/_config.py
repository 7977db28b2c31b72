"""A prediction request's config as the SDK takes it, checked once, in two shapes.

`config=` (an `LlmPredictionConfig`, or a dict in camelCase or snake_case) and
`response_format=` (a JSON-schema dict or a class with `model_json_schema()`, as
`respond()` takes it) are checked by `producers.prediction_config` with the SDK's own schema
(the check `JobQueue` runs: one set of rules and messages), giving the job's contract config.
The same config as the SDK's object is what the result reports as `prediction_config`.
"""

from __future__ import annotations

from typing import Any

import lmstudio as lms

from producers.prediction_config import ConfigInput, checked_config
from producers.sdk._errors import translated
from workers.contract import PredictionConfig

SdkConfig = ConfigInput


def job_config(config: SdkConfig, response_format: Any = None) -> PredictionConfig:
    """The job's config; a wrong key or value raises InvalidRequestError naming it."""
    with translated():
        return checked_config(config, response_format)


def sdk_config(checked: PredictionConfig) -> lms.LlmPredictionConfig:
    """The checked config as the SDK's object (as `PredictionResult.prediction_config`)."""
    return lms.LlmPredictionConfig._from_any_dict(checked.sdk_dict())
