"""Celery configuration derived from settings, shared by the worker app and producers.

Both sides must agree on serializers, result backend and transport options, so they are
built here once. Nothing here imports tasks or the LM Studio SDK.
"""

from __future__ import annotations

import logging
from ssl import CERT_NONE
from typing import Any

from workers.contract import queue_name
from workers.settings import Settings

log = logging.getLogger(__name__)

# Job priorities, most urgent first.
PRIORITIES = ("high", "normal", "low")
# Redis (kombu): one broker list per step, `lmq.<model>` + sep + step (no suffix for 0).
# Normal is step 0, the queue's own list, because kombu puts every message that carries no
# priority there (jobs from older producers, plain `send_task`): they count as normal. The
# worker takes the lists in PRIORITIES order (`workers.delivery.held_transport`).
REDIS_PRIORITY_STEP = {"high": 3, "normal": 0, "low": 6}
# RabbitMQ priority queues: the highest number is delivered first.
AMQP_PRIORITY = {"high": 2, "normal": 1, "low": 0}
# Message header with the epoch seconds a job was enqueued: the take script ages jobs by it.
ENQUEUED_AT_HEADER = "lmq_enqueued_at"
# Message header with the job's tenant label (absent or null: no tenant). On Redis it picks
# the tenant's broker list (`tenant_list`), and the worker's take gives tenants turns.
TENANT_HEADER = "lmq_tenant"
# Message header, true when the producer reads the job's text as it is generated (a stream):
# the worker then publishes the first fragment as soon as it arrives, not at the next flush
# (time to first content). A header, not a job field: workers that do not know it run the
# job all the same.
STREAMED_HEADER = "lmq_streamed"
# kombu's Redis transport: queue + PRIORITY_SEP + priority step names a priority list.
PRIORITY_SEP = "\x06\x16"
# Priority list + TENANT_SEP + tenant names that tenant's list. Not kombu's: kombu only
# ever sees the priority lists themselves, which hold the jobs without a tenant.
TENANT_SEP = "\x06\x17"
# How fast a tenant's past takes stop counting against it in the take's fair share
# (`workers.delivery.tenant_turns`; a job's position models the same): long enough that a
# burst of a big tenant's takes still counts when a small tenant arrives, short enough that
# a tenant that arrives with a backlog catches up with an established one within about that
# time. Here, not there, so producers read it too.
USAGE_HALF_LIFE_S = 10


def priority_list(queue: str, step: int) -> str:
    """The Redis list of `queue`'s messages of kombu priority `step` (kombu's `_q_for_pri`:
    no suffix for step 0)."""
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


def model_priority_list(model: str, priority: str) -> str:
    """The broker list of `model`'s jobs of `priority` ("high", "normal", "low") without a
    tenant; each tenant's have their own (`tenant_list`)."""
    return priority_list(queue_name(model), REDIS_PRIORITY_STEP[priority])


def tenant_list(priority_list_name: str, tenant: str | None) -> str:
    """The Redis list of one tenant's jobs on a priority list (tenant turns, Redis only).

    The one place the name is computed: producers push there (`producers.publisher`), the
    worker's transport pushes restored and re-published messages there and takes from it
    (`workers.delivery.tenant_turns`), and the readers count it (`workers.metrics`). Jobs
    without a tenant stay on the priority list itself, where plain kombu publishes put
    them too: they are one tenant of their own.
    """
    return f"{priority_list_name}{TENANT_SEP}{tenant}" if tenant else priority_list_name


def message_tenant(message: dict[str, Any]) -> str | None:
    """The tenant of a kombu message envelope (its TENANT_HEADER), None if it has none."""
    headers = message.get("headers")
    tenant = headers.get(TENANT_HEADER) if isinstance(headers, dict) else None
    return tenant if isinstance(tenant, str) and tenant else None


def is_redis(broker_url: str) -> bool:
    return broker_url.startswith(("redis://", "rediss://"))


def message_priority(priority: str, broker_url: str) -> int:
    """The broker message priority of a job priority ("high", "normal", "low")."""
    table = REDIS_PRIORITY_STEP if is_redis(broker_url) else AMQP_PRIORITY
    return table[priority]


def transport_options(settings: Settings) -> dict[str, Any]:
    if not is_redis(settings.broker_url):
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
        # One list per job priority (REDIS_PRIORITY_STEP), taken in priority order by the
        # worker (`workers.delivery.held_transport`).
        "priority_steps": sorted(REDIS_PRIORITY_STEP.values()),
        "socket_keepalive": True,
        "health_check_interval": 10,
    }


# Every process's transport on a Redis broker: kombu's, whose purge also deletes the
# tenant lists (`workers.delivery.tenant_purge`; named, not imported: producers only load
# it when they connect). Workers replace it with the held transport, which purges the same
# way.
CLIENT_TRANSPORT = "workers.delivery.tenant_purge:ClientTransport"


def celery_config(settings: Settings) -> dict[str, Any]:
    return {**_common_config(settings), **_priority_config(settings),
            **_transport_config(settings)}


def _transport_config(settings: Settings) -> dict[str, Any]:
    """`CLIENT_TRANSPORT` on `redis://` and `rediss://`. On `rediss://` the URL's `ssl_*`
    query becomes the connection's ssl options whatever the transport class; kombu's one
    rediss-only default (no ssl options: `ssl_cert_reqs=CERT_NONE`, with a warning) is
    keyed on the transport's name, which is then ours, so it is set here."""
    url = settings.broker_url
    if not is_redis(url):
        return {}
    ssl = bare_rediss_ssl(url)
    return {"broker_transport": CLIENT_TRANSPORT, **({"broker_use_ssl": ssl} if ssl else {})}


def bare_rediss_ssl(broker_url: str) -> dict[str, Any] | None:
    """kombu's ssl options for a `rediss://` URL that names none (no certificate check,
    with a warning); None for any other URL. Needed wherever the transport is ours."""
    if not broker_url.startswith("rediss://") or "ssl_cert_reqs" in broker_url:
        return None
    log.warning("rediss:// broker without ssl_cert_reqs: the certificate is not verified")
    return {"ssl_cert_reqs": CERT_NONE}


def _priority_config(settings: Settings) -> dict[str, Any]:
    if is_redis(settings.broker_url):
        return {}
    # RabbitMQ: queues declared as priority queues (x-max-priority), by workers and producers
    # alike; a queue declared before without it must be deleted once (ops/runbook.md).
    return {"task_queue_max_priority": max(AMQP_PRIORITY.values()),
            "task_default_priority": AMQP_PRIORITY["normal"]}


def _common_config(settings: Settings) -> dict[str, Any]:
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
