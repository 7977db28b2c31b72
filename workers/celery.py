"""The Celery app: `celery -A workers worker` finds `workers.celery.app`.

Configured from `workers.celery_config` (shared with producers) plus worker settings:

* pool: `workers.delivery.pool:TaskPool` (each job a greenlet on the worker's SDK loop;
  terminate triggers our cancel path), selected through `worker_pool`, so
  `celery -A workers worker` needs no `-P`;
* concurrency: LMQ_CONCURRENCY, else LMQ_SLOTS (the model's concurrent predictions) plus
  LMQ_PREFETCH_THREADS: with acks_late and prefetch 1 per thread, the extra threads receive
  the next jobs while the slots predict, so Celery's messaging overlaps with predictions;
  they wait in `workers.admission.seam.SlotLimit`, which keeps predictions at most LMQ_SLOTS, and
  hold jobs behind those waiting for GPU memory. Memory does not lower the count: the
  group's semaphore admits each job by its own KV (`workers.admission.thread_count`);
* queue: `lmq.<LMQ_MODEL>` only. Importing this module without LMQ_MODEL works (producers,
  `celery -A workers flower`, `celery -A workers control ...`); a *worker* without it exits
  with a clear message (`workers.lifecycle`);
* a killed worker's jobs are queued again within LMQ_HOLD_LEASE_S (`workers.delivery.redelivery`,
  Redis brokers; started by `workers.lifecycle`);
* consumer: `workers.consumer:Consumer` (`worker_consumer`), Celery's with a Gossip step
  that logs one line instead of chained tracebacks when Redis goes away;
* task events on; `worker_deduplicate_successful_tasks` on, and the STARTED state written
  by `workers.delivery.result_store` instead of Celery's `task_track_started` (one round trip);
* a Redis result backend writes each state with one script
  (`workers.delivery.result_backend`: no GET before the write, a stored SUCCESS or REVOKED kept).

Importing the app does not import the LM Studio SDK: task modules (`workers.tasks`) are
imported by the worker only (`include`).
"""

from __future__ import annotations

from celery import Celery
from celery.signals import celeryd_init, task_received, worker_shutdown
from kombu import Queue

from workers import metrics
from workers.celery_config import celery_config
from workers.contract import queue_name
from workers.delivery import (
    cancel,
    finish_ack,
    job_finish,
    redelivery,
    result_backend,
    result_store,
    revoke_store,
)
from workers.flower import config as flower_config
from workers.settings import Settings, get_settings


def worker_config(settings: Settings) -> dict[str, object]:
    config: dict[str, object] = {
        "worker_pool": "workers.delivery.pool:TaskPool",
        # Celery's consumer whose Gossip step survives losing Redis (one line, no traceback)
        "worker_consumer": "workers.consumer:Consumer",
        "worker_concurrency": settings.concurrency or settings.slots + settings.prefetch_threads,
        "worker_deduplicate_successful_tasks": True,
        # STARTED is written by workers.delivery.result_store in the same round trip as the dedupe
        # check and the attempt count; Celery's own write would cost two more.
        "task_track_started": False,
        "worker_send_task_events": True,
    }
    if settings.model:
        config["task_queues"] = [Queue(queue_name(settings.model))]
        config["task_default_queue"] = queue_name(settings.model)
    return config


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery_app = Celery("lmq", include=["workers.tasks"])
    celery_app.Worker = celery_app.subclass_with_self("workers.banner:Worker")  # its banner
    celery_app.conf.update(celery_config(settings))
    celery_app.conf.update(worker_config(settings))
    # Redis results: each state written by one script (no GET before it: one round trip).
    celery_app.backend_cls = result_backend.backend_class(settings.backend_url)
    # By name: the step (and the SDK) is imported only when a worker starts.
    celery_app.steps["worker"].add("workers.lifecycle:LMStudioStep")
    # The start script also writes the job's running entry of the metrics (one round trip).
    result_store.connect(celery_app, running_entry=metrics.running_entry)
    # Worker processes only (not Flower or producers): kombu's Redis transport that leases
    # held jobs in its own bookkeeping.
    celeryd_init.connect(redelivery.use_held_transport, weak=False,
                         dispatch_uid="lmq-held-transport")
    # Worker processes: a revoke this worker hears is stored in Redis for later workers,
    # and the cancel watcher checks its running jobs at once.
    celeryd_init.connect(lambda **_: revoke_store.install(on_heard=cancel.wake), weak=False,
                         dispatch_uid="lmq-revoke-store")
    task_received.connect(redelivery.record, weak=False, dispatch_uid="lmq-held-record")
    worker_shutdown.connect(redelivery.stop, weak=False, dispatch_uid="lmq-held-stop")
    # A job's metrics, stream end and (on success) broker ack ride in the round trip of
    # its final state.
    job_finish.connect(metrics.finish_rider, finish_ack.rider)
    metrics.connect(started_by=result_store.started_with_running)
    flower_config.install_if_flower(celery_app)
    return celery_app


app = create_app()
