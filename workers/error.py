"""The exceptions of lmstudio-queue, in one tree.

    LmqError
    ├── BadJobError(ValueError)            a job that can never succeed; never retried
    │   ├── InvalidJobError                 malformed job (schema, tool format, size)
    │   ├── ContextOverflowError            prompt + output over the model's context length
    │   └── DoesNotFitError                 KV cache can never fit in the GPU budget
    ├── TransientError                      worth a retry: tasks retry only this branch
    │   ├── LMStudioUnavailableError(ConnectionError)  LM Studio down or dropped the socket
    │   │   └── LMStudioLostError            still unreachable after the job's retries:
    │   │                                    the job goes back to its queue
    │   ├── AdmissionClosedError            the worker closed its gate while a job waited
    │   └── AdmissionUnavailableError(ConnectionError)  admission's Redis unreachable
    ├── ConfigError(ValueError)             a setting is wrong (LMQ_LOAD_CONFIG); fix, restart
    ├── ModelNotServedError(LookupError)    no live worker serves the model's queue
    ├── ModelNotAvailableError(LookupError) the model is not downloaded on the LM Studio host
    ├── JobCancelledError                   the job was revoked; carries the partial result
    ├── JobExpiredError                     not started within its `expires_s`; never ran
    ├── JobFailedError                      LM Studio reported an error for the prediction
    └── JobTimeoutError(TimeoutError)       waiting for a result took too long

Every exception rebuilds from `cls(*exc.args)`: Celery's JSON result backend recreates remote
exceptions that way and drops anything else, so no keyword-only state lives on them.
"""

from __future__ import annotations

from typing import Any


class LmqError(Exception):
    """Base of every lmstudio-queue error."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class BadJobError(LmqError, ValueError):
    """The job itself is wrong; retrying cannot help. The message says what to fix."""


class InvalidJobError(BadJobError):
    """Malformed job: bad schema, bad tool format, too large."""


class ContextOverflowError(BadJobError):
    """The prompt (plus requested output) does not fit the model's context length."""


class DoesNotFitError(BadJobError):
    """The job's KV cache can never fit the GPU budget."""


class TransientError(LmqError):
    """A failure that a retry may fix."""


class LMStudioUnavailableError(TransientError, ConnectionError):
    """LM Studio is not reachable, or dropped the connection mid-job."""


class LMStudioLostError(LMStudioUnavailableError):
    """LM Studio still unreachable after a job's retries: requeue it (`workers.lmstudio.outage`)."""


class AdmissionClosedError(TransientError):
    """The worker closed its gate while a job waited for admission: retry the job."""


class AdmissionUnavailableError(TransientError, ConnectionError):
    """Admission's Redis stayed unreachable (connection error or timeout) through retries."""


class ConfigError(LmqError, ValueError):
    """A setting is wrong; the message names it and what is allowed."""


class ModelNotServedError(LmqError, LookupError):
    """No live worker consumes the model's queue."""


class ModelNotAvailableError(LmqError, LookupError):
    """The model is not downloaded on the LM Studio host."""


class JobFailedError(LmqError):
    """LM Studio reported an error for the prediction."""


class JobExpiredError(LmqError):
    """The job was not started within its `expires_s` of its submission, so it never ran."""


class JobTimeoutError(LmqError, TimeoutError):
    """The result did not arrive in time (the job may still be running)."""


class JobCancelledError(LmqError):
    """The job was cancelled. args: (message, partial_result_dict_or_None)."""

    def __init__(self, message: str = "job cancelled", partial: dict[str, Any] | None = None):
        super().__init__(message, partial)

    @property
    def partial(self) -> dict[str, Any] | None:
        return self.args[1] if len(self.args) > 1 else None
