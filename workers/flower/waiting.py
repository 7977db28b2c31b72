"""Flower's home page (Workers) gets a panel: jobs waiting per model and priority.

Flower knows tasks from their events, so it cannot tell how many jobs sit in a model's
queue, nor at which priority. The panel reads that from the broker's Redis with the same
functions as `lmq workers` and the metrics (`workers.metrics.known_models`,
`queue_lengths`), once per page load: a few Redis commands, no background work in Flower.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import redis

from workers import metrics
from workers.celery_config import PRIORITIES
from workers.settings import Settings, get_settings

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 2.0  # the page must render even if Redis hangs


@dataclass
class WaitingRow:
    model: str
    by_priority: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_priority.values())


@dataclass
class WaitingTable:
    rows: list[WaitingRow] = field(default_factory=list)
    read_at: str = ""
    note: str = ""  # why there are no rows (nothing waits, not a Redis broker, Redis down)
    priorities: tuple[str, ...] = tuple(PRIORITIES)


def waiting_table(settings: Settings | None = None) -> WaitingTable:
    """Waiting jobs per model (every model a worker served or with jobs queued) and priority."""
    settings = settings or get_settings()
    read_at = time.strftime("%H:%M:%S")
    if not settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return WaitingTable(read_at=read_at, note="waiting counts need a Redis broker (on "
                            "RabbitMQ, its management UI shows each lmq.<model> queue)")
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=READ_TIMEOUT_S,
                                  socket_connect_timeout=READ_TIMEOUT_S)
    try:
        rows = [WaitingRow(model, metrics.queue_lengths(client, model))
                for model in metrics.known_models(client)]
    except (redis.RedisError, OSError) as exc:
        log.warning("flower: waiting jobs not read: %s", exc)
        return WaitingTable(read_at=read_at, note=f"the broker's Redis did not answer ({exc})")
    finally:
        client.close()
    return WaitingTable(rows=rows, read_at=read_at, note="" if rows else "no model known yet")


# Inserted into Flower's workers.html before its workers table (`view.patched_workers_page`).
PANEL = """{% from workers.flower.waiting import waiting_table %}
  {% set waiting = waiting_table() %}
  <section class="workers-table-card mb-3" aria-label="Waiting jobs" id="lmq-waiting">
    <p class="metric-label px-3 pt-3 mb-1">Waiting jobs by model and priority
      <span class="text-muted">(lmstudio-queue, read at {{ waiting.read_at }};
      reload to update)</span></p>
    <figure class="table-responsive mb-0">
      <table id="lmq-waiting-table" class="table table-hover align-middle w-100 mb-0">
        <thead><tr><th>Model</th>
          {% for priority in waiting.priorities %}
          <th class="text-center">{{ priority }}</th>
          {% end %}
          <th class="text-center">total</th></tr></thead>
        <tbody>
          {% for row in waiting.rows %}
          <tr data-model="{{ row.model }}"><td>{{ row.model }}</td>
            {% for priority in waiting.priorities %}
            <td class="text-center" data-priority="{{ priority }}">
              {{ row.by_priority.get(priority, 0) }}</td>
            {% end %}
            <td class="text-center" data-priority="total">{{ row.total }}</td></tr>
          {% end %}
          {% if not waiting.rows %}<tr><td colspan="5">{{ waiting.note }}</td></tr>{% end %}
        </tbody>
      </table>
    </figure>
  </section>
"""
