"""Celery configuration derived from settings, shared by the worker app and producers.

Both sides must agree on serializers, result backend and transport options, so they are
built here once. Nothing here imports tasks or the LM Studio SDK.
"""

from __future__ import annotations

from typing import Any

from workers.settings import Settings


def transport_options(settings: Settings) -> dict[str, Any]:
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        return {}
    return {
        # An unacked job is redelivered after this: it must exceed the longest job.
        "visibility_timeout": settings.visibility_timeout_s,
        # kombu's sweep restores messages older than the visibility timeout. A killed
        # worker's jobs come back much sooner through `workers.delivery.redelivery`; this
        # sweep is the backstop for jobs no worker holds (it skips held ones:
        # `HeldQoS.restore_visible`), so once a minute is enough (kombu's default: 100 s).
        "unacked_restore_interval": 60,
        "unacked_restore_throttle": 1,
        # One list per queue (every job is published at priority 0): fewer lists for the
        # worker to take entries from (`workers.delivery.held_transport`).
        "priority_steps": [0],
        "socket_keepalive": True,
        "health_check_interval": 10,
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.backend_url,
        "broker_transport_options": transport_options(settings),
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "broker_connection_retry_on_startup": True,
        # JSON only: a pickled message is rejected by the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_expires": settings.result_expires_s,
        "result_extended": True,
        "task_track_started": True,
        # Reliability: a job is acknowledged only after it finished; a worker lost mid-job
        # means the job goes back on the queue.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Task events, so Flower sees jobs from the moment they are queued.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": "lmq.default",
        "worker_hijack_root_logger": False,
    }
