"""A job that succeeded is acknowledged in the round trip that stores its result.

With acks_late, Celery acknowledges a job after it returned, on the consumer's thread:
kombu's ack is a MULTI of its own (ZREM `unacked_index`, HDEL `unacked`, and the tenant's
running set, `tenant_turns.release`), one more round trip per job on the thread that also
takes and delivers every job (2.4% of a worker's GIL samples at the stress timing,
ops/profile-worker-stress.md). When the broker is the result backend's Redis, those writes
ride with the job's SUCCESS state instead (`job_finish`), and the ack Celery sends next
only forgets the message in this process (`HeldQoS.ack`).

Only SUCCESS: what happens to a job that failed, was rejected or requeued stays Celery's
decision. The tag is marked acknowledged only once the pipeline went through; if it did
not, Celery's ack does it all. A worker killed between the two leaves nothing to redo:
the job is acknowledged with its result stored.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from celery import states

from workers.celery_config import TENANT_HEADER
from workers.delivery import redelivery, tenant_turns
from workers.delivery.job_finish import FinishBatch

_acked: set[str] = set()  # delivery tags acknowledged with their job's result
_lock = threading.Lock()


@dataclass(frozen=True)
class BrokerAck:
    """The writes of kombu's ack for one delivery tag, with the broker's full key names."""

    tag: str
    tenant: str | None
    prefix: str  # the broker's global_keyprefix
    unacked_key: str
    unacked_index_key: str
    held_key: str  # this worker's held set (`redelivery`), its full name

    def add(self, batch: FinishBatch, state: str, result: Any) -> None:
        if state != states.SUCCESS:
            return
        self.write(batch.pipe)
        batch.after(self._sent)

    def write(self, pipe: Any) -> None:
        """The tag out of `unacked`, `unacked_index`, its tenant's running set and this
        worker's held set."""
        pipe.zrem(self.prefix + self.unacked_index_key, self.tag)
        pipe.hdel(self.prefix + self.unacked_key, self.tag)
        tenant_turns.release(pipe, self.tenant, self.tag, key_prefix=self.prefix)
        pipe.srem(self.held_key, self.tag)

    def send_alone(self, state: str | None) -> None:
        """Nothing: Celery's own ack does it."""

    def _sent(self) -> None:
        with _lock:
            _acked.add(self.tag)


def rider(task_id: str, task: Any, args: Any) -> BrokerAck | None:
    """The ack of the message that brought `task`, when the broker is the result backend's
    Redis and this worker's transport booked it (`held_transport`); else None."""
    current = redelivery.current()
    if current is None or not current.ready or not _broker_holds_results():
        return None
    properties = getattr(task.request, "properties", None) or {}
    tag = properties.get("delivery_tag")
    if not tag:
        return None
    tenant = getattr(task.request, TENANT_HEADER, None)
    channel = current.channel
    return BrokerAck(str(tag), tenant if isinstance(tenant, str) and tenant else None,
                     channel.global_keyprefix, channel.unacked_key, channel.unacked_index_key,
                     current.key(current.held_key))


def acked(tag: str) -> bool:
    """True (once) if `tag` was acknowledged with its job's result: Celery's ack that
    follows has nothing left to write."""
    with _lock:
        if tag in _acked:
            _acked.discard(tag)
            return True
    return False


def _broker_holds_results() -> bool:
    from workers.settings import get_settings

    settings = get_settings()
    return settings.broker_url == settings.backend_url
