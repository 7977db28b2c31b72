"""Calling the SDK: its errors mapped to ours, and its timeout between messages.

Errors: every SDK exception is mapped to our error tree here (`sdk_errors`), nowhere else:

    LMStudioWebsocketError, unreachable host, LMStudioTimeoutError -> LMStudioUnavailableError
    no message for LMQ_SDK_TIMEOUT_S (`quiet_timeout`)             -> LMStudioUnavailableError
    LMStudioModelNotFoundError                                  -> ModelNotAvailableError
    LMStudioValueError (bad history / config)                    -> InvalidJobError
    any other LMStudioError (server, prediction, runtime)        -> JobFailedError

Timeouts: the async SDK has no `set_sync_api_timeout` (the sync SDK's wait for the next
message); `quiet_timeout` is ours, on the SDK's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import lmstudio as lms

from workers.error import (
    InvalidJobError,
    JobFailedError,
    LmqError,
    LMStudioUnavailableError,
    ModelNotAvailableError,
)

_RESCHEDULE_S = 1.0  # quiet_timeout: how often a message may move the timer


@contextmanager
def sdk_errors(what: str) -> Iterator[None]:
    """Map SDK exceptions raised while doing `what` onto the lmstudio-queue error tree."""
    try:
        yield
    except LmqError:
        raise
    except lms.LMStudioTimeoutError as exc:
        raise LMStudioUnavailableError(f"{what}: no message from LM Studio in time") from exc
    except lms.LMStudioWebsocketError as exc:
        raise LMStudioUnavailableError(f"{what}: {one_line(exc)}") from exc
    except lms.LMStudioModelNotFoundError as exc:
        raise ModelNotAvailableError(f"{what}: {one_line(exc)}") from exc
    except lms.LMStudioValueError as exc:
        raise InvalidJobError(f"{what}: {one_line(exc)}") from exc
    except lms.LMStudioClientError as exc:
        if "not reachable" in str(exc):
            raise LMStudioUnavailableError(f"{what}: {one_line(exc)}") from exc
        raise JobFailedError(f"{what}: {one_line(exc)}") from exc
    except lms.LMStudioError as exc:
        raise JobFailedError(f"{what}: {one_line(exc)}") from exc
    except TimeoutError as exc:  # quiet_timeout ran out (before OSError: it is one)
        raise LMStudioUnavailableError(f"{what}: no message from LM Studio in time") from exc
    except (httpx.HTTPError, OSError) as exc:
        raise LMStudioUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@asynccontextmanager
async def quiet_timeout(timeout_s: float) -> AsyncIterator[Callable[[], None]]:
    """TimeoutError when no message came for `timeout_s`; call what it yields per message.

    The sync SDK's timeout is "between messages", so a long stream or a slow load is fine
    as long as LM Studio keeps talking. Moving the timer costs a heap push, so a message
    moves it only when it last moved `step_s` ago (a second, or a quarter of a short
    timeout): a quiet spell may end that much early.
    """
    loop = asyncio.get_running_loop()
    moved_at = loop.time()
    step_s = min(_RESCHEDULE_S, timeout_s / 4)

    def heard() -> None:
        nonlocal moved_at
        now = loop.time()
        if now - moved_at >= step_s:
            moved_at = now
            timer.reschedule(now + timeout_s)

    async with asyncio.timeout(timeout_s) as timer:
        yield heard
