"""The per-process parts every job uses, set by the worker's start-up (`workers.lifecycle`).

Here, beside the job runner that reads it, so that jobs never import the lifecycle that
builds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from workers.admission.seam import Gate
from workers.delivery.cancel import CancelWatcher
from workers.error import LMStudioUnavailableError
from workers.lmstudio.outage import Outage
from workers.lmstudio.session import Session
from workers.served_registry import Registration
from workers.settings import Settings


@dataclass
class Runtime:
    """The per-process parts every job uses."""

    settings: Settings
    session: Session
    gate: Gate
    redis: redis.Redis | None
    watcher: CancelWatcher
    hostname: str
    outage: Outage | None = None  # None outside a worker (no app to stop consuming with)
    threads: int = 1  # the pool's thread count (`workers.lifecycle.worker_threads`)
    registration: Registration | None = None  # this worker in `workers.served_registry`


_current: Runtime | None = None


def runtime() -> Runtime:
    """This worker's runtime; LMStudioUnavailableError before start-up connected it."""
    if _current is None:
        raise LMStudioUnavailableError("this worker is not connected to LM Studio yet")
    return _current


def install(rt: Runtime | None) -> Runtime | None:
    """Make `rt` the current runtime (None: none); return the one it replaces."""
    global _current
    previous, _current = _current, rt
    return previous
