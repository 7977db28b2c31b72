"""A pool on this machine: workers for some models, on a given Redis and LM Studio host.

For tests, benchmarks and the demo: `with local_pool(url, host, [models]) as pool:` starts
one `celery -A workers worker` per model (the command a user types) and a `JobQueue`, and
stops the workers afterwards. It never starts or stops Redis or LM Studio itself.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from producers.demo_stack import Say, start_workers, worker_env
from producers.job_queue import JobQueue
from producers.worker_process import WorkerProcess
from workers.settings import Settings


@dataclass
class LocalPool:
    settings: Settings
    env: dict[str, str]
    workers: list[WorkerProcess]
    queue: JobQueue

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(f"--- {w.hostname} ---\n{w.log_tail(lines)}" for w in self.workers)


_POOLS = itertools.count()


def _quiet(_line: str) -> None:
    return None


@contextmanager
def local_pool(redis_url: str, lmstudio_host: str, models: list[str], *,
               extra_env: dict[str, str] | None = None, say: Say = _quiet) -> Iterator[LocalPool]:
    settings = Settings(broker_url=redis_url, result_backend=redis_url,
                        lmstudio_host=lmstudio_host)
    env = {**worker_env(settings, on_simulator=True), **(extra_env or {})}
    with ExitStack() as stack:
        prefix = f"pool{os.getpid()}x{next(_POOLS)}"
        workers = start_workers(settings, models, env, stack, say, name_prefix=prefix)
        queue = JobQueue(settings)
        stack.callback(queue.close)
        yield LocalPool(settings, env, workers, queue)
