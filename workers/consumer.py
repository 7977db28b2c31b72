"""The worker's consumer: Celery's, with task events sent in batches (`workers.task_events`)
and a Gossip step that survives losing Redis (issue 23).

When the broker connection drops, Celery's consumer closes it and sets `c.connection =
None` (`Consumer.on_connection_error_after_connected`), then restarts its bootsteps. Gossip,
a `ConsumerStep`, closes its channel through `ignore_errors(c.connection, channel.close)`;
closing a Redis channel deletes Gossip's auto-delete event queue, which fails while Redis is
down, and kombu then reads `None.connection_errors`: "Error on restarting Gossip:
AttributeError" and about 150 lines of chained tracebacks, each time Redis goes away. It
raced with Ctrl-C: printed before or after "Warm shutdown" depending on when the consumer
noticed the lost connection.

`Gossip` here closes its consumers and channel ignoring the transport's connection and
channel errors (the ones kombu ignores when it is given a connection), and says so in one
line. Any other error still reaches Celery, which logs it with its traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.consumer.gossip import Gossip as CeleryGossip
from kombu.common import ignore_errors

from workers.task_events import EventFlusher

log = logging.getLogger("workers.consumer")

_CELERY_GOSSIP = "celery.worker.consumer.gossip:Gossip"


class Gossip(CeleryGossip):  # type: ignore[misc]  # celery is untyped
    """Celery's Gossip; closing its channel with the broker unreachable logs one line."""

    name = CeleryGossip.name  # the step Celery's blueprint and `requires` know

    def _close(self, c: Any, cancel_consumers: bool = True) -> None:
        consumers = self.consumers or []
        calls = [(k.channel, k.cancel) for k in consumers if cancel_consumers]
        calls += [(channel, channel.close) for channel in {k.channel for k in consumers} if channel]
        lost = [
            exc
            for channel, call in calls
            if (exc := _unreachable(c.connection, channel, call)) is not None
        ]
        if lost:
            log.warning("gossip: event queue not deleted, broker unreachable (%s)", lost[-1])


def _unreachable(connection: Any, channel: Any, call: Any) -> BaseException | None:
    """`call()`; the connection or channel error it raised, else None (others propagate).

    Those errors are the consumer connection's, else (Celery dropped it after losing the
    broker) the channel transport's, which declares the same ones.
    """
    source = connection if connection is not None else getattr(channel, "connection", None)
    errors = (source.connection_errors + source.channel_errors) if source is not None else ()
    try:
        call()
    except errors as exc:
        return exc  # type: ignore[no-any-return]
    return None


class Consumer(CeleryConsumer):  # type: ignore[misc]  # celery is untyped
    """Celery's consumer with `Gossip` above in place of Celery's, and task events flushed
    in batches (`worker_consumer`)."""

    class Blueprint(CeleryConsumer.Blueprint):  # type: ignore[misc]
        default_steps = [
            f"{__name__}:Gossip" if step == _CELERY_GOSSIP else step
            for step in CeleryConsumer.Blueprint.default_steps
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._event_flusher = EventFlusher(self.hub, self._flush_events) if self.hub else None

    def on_send_event_buffered(self) -> None:
        if self._event_flusher is not None:
            self._event_flusher.on_buffered()

    def shutdown(self) -> None:
        """Send what is still buffered (a batch waits up to `FLUSH_INTERVAL_S`) before the
        Events step closes the dispatcher."""
        if self.event_dispatcher:
            ignore_errors(self, self.event_dispatcher.flush)
        super().shutdown()
