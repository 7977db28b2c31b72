"""The SDK's exception classes, raised where `lmstudio` would raise them.

Each class here derives from both the pool's error (so `except producers.LmqError` code keeps
working) and the SDK's class (so `except lms.LMStudioModelNotFoundError` code written for
LM Studio keeps working):

    ModelNotFoundError(ModelNotServedError, LMStudioModelNotFoundError)   no worker serves it
    InvalidRequestError(InvalidJobError, LMStudioValueError)              bad config, chat, tool
    PredictionFailedError(JobFailedError, LMStudioPredictionError)        the prediction failed
    ContextTooLongError(ContextOverflowError, LMStudioPredictionError)    prompt over the context
    PoolTimeoutError(JobTimeoutError, LMStudioTimeoutError)               no result in time
    PredictionExpiredError(JobExpiredError, LMStudioPredictionError)      not started by expires_s
    PoolUnavailableError(LMStudioUnavailableError, LMStudioWebsocketError) LM Studio or Redis gone

`translated()` is the one boundary where pool errors become these.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lmstudio as lms
import redis
from lmstudio.schemas import DictObject

from workers.error import (
    BadJobError,
    ContextOverflowError,
    InvalidJobError,
    JobExpiredError,
    JobFailedError,
    JobTimeoutError,
    LmqError,
    LMStudioUnavailableError,
    ModelNotServedError,
)


class _NoServerDetails:
    """LMStudioServerError's attributes: no server sent these errors, so no details."""

    server_error: lms.SerializedLMSExtendedError | None = None
    _raw_error: DictObject | None = None


class ModelNotFoundError(_NoServerDetails, ModelNotServedError, lms.LMStudioModelNotFoundError):
    """No live worker serves the model (the SDK: no such model on the server)."""


class InvalidRequestError(InvalidJobError, lms.LMStudioValueError):
    """A config key or value, chat, tool or response format the job cannot carry."""


class PredictionFailedError(_NoServerDetails, JobFailedError, lms.LMStudioPredictionError):
    """The prediction failed on the worker or in LM Studio."""


class ContextTooLongError(_NoServerDetails, ContextOverflowError, lms.LMStudioPredictionError):
    """The prompt plus the requested output does not fit the model's context."""


class PredictionExpiredError(_NoServerDetails, JobExpiredError, lms.LMStudioPredictionError):
    """No worker started the job within the client's `expires_s`: it never ran."""


class PoolTimeoutError(JobTimeoutError, lms.LMStudioTimeoutError):
    """The result did not arrive in time (the job may still be running)."""


class PoolUnavailableError(LMStudioUnavailableError, lms.LMStudioWebsocketError):
    """LM Studio, or the pool's Redis, cannot be reached."""


def as_sdk_error(exc: BaseException) -> BaseException:
    """The SDK-shaped twin of a pool error (other exceptions are returned unchanged)."""
    for pool_class, twin in _TWINS:
        if isinstance(exc, pool_class) and not isinstance(exc, twin):
            return twin(str(exc))
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return PoolUnavailableError(f"the pool's Redis does not answer ({exc}): start it or "
                                    "set LMQ_BROKER_URL")
    return exc


# Most specific first: ContextOverflowError is a BadJobError too.
_TWINS: tuple[tuple[type[BaseException], type[BaseException]], ...] = (
    (ModelNotServedError, ModelNotFoundError),
    (ContextOverflowError, ContextTooLongError),
    (InvalidJobError, InvalidRequestError),
    (BadJobError, PredictionFailedError),
    (JobFailedError, PredictionFailedError),
    (JobExpiredError, PredictionExpiredError),
    (JobTimeoutError, PoolTimeoutError),
    (LMStudioUnavailableError, PoolUnavailableError),
    (LmqError, PredictionFailedError),
)


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise pool errors as their SDK-shaped twins (the cause stays attached)."""
    try:
        yield
    except (LmqError, redis.ConnectionError, redis.TimeoutError) as exc:
        twin = as_sdk_error(exc)
        if twin is exc:
            raise
        raise twin from exc
