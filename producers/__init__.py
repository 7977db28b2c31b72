"""lmstudio-queue producers: enqueue jobs, await results, the `lmq` CLI.

    from producers import JobQueue
    queue = JobQueue()
    print(queue.chat("llama-3.2-1b-instruct", "Hello").result(timeout=60).content)

LM Studio scripts: `from producers import sdk as lms` (the `lmstudio` SDK's API over the pool;
imported on first use, so `import producers` stays light).
"""

from producers.cancellation import BulkCancel, CancelOutcome
from producers.job_handle import JobHandle
from producers.job_queue import JobQueue
from workers.error import (
    BadJobError,
    ContextOverflowError,
    DoesNotFitError,
    InvalidJobError,
    JobCancelledError,
    JobExpiredError,
    JobFailedError,
    JobTimeoutError,
    LmqError,
    LMStudioUnavailableError,
    ModelNotAvailableError,
    ModelNotServedError,
    TransientError,
)

__all__ = [
    "BadJobError",
    "BulkCancel",
    "CancelOutcome",
    "ContextOverflowError",
    "DoesNotFitError",
    "InvalidJobError",
    "JobCancelledError",
    "JobFailedError",
    "JobHandle",
    "JobQueue",
    "JobExpiredError",
    "JobTimeoutError",
    "LMStudioUnavailableError",
    "LmqError",
    "ModelNotAvailableError",
    "ModelNotServedError",
    "TransientError",
    "sdk",
]
