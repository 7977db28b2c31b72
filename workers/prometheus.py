"""The pool's Prometheus metrics, read from the Redis aggregates at scrape time.

One scrape target covers every worker: workers count into Redis (`workers.metrics`), and
this collector reads those counts whenever it is scraped. It is served

- by Flower: `celery -A workers flower` registers it in Flower's registry, so Flower's own
  `/metrics` carries `flower_*` and `lmq_*` series together; and
- without Flower: `lmq metrics serve [--port 9808]` (`producers.cli.metrics`).

Series (labels `model`, or `group` for admission):

    lmq_jobs_queued / lmq_jobs_running                      gauges
    lmq_jobs_queued_by_priority{priority}                   gauge (high, normal, low)
    lmq_tenants_waiting                                     gauge (tenants with jobs waiting)
    lmq_jobs_finished_total{outcome=succeeded|failed|cancelled}
    lmq_predicted_tokens_total
    lmq_tokens_per_second, lmq_time_to_first_token_seconds, lmq_queue_wait_seconds
                                                            histograms (_bucket/_sum/_count)
    lmq_gpu_budget_bytes, lmq_gpu_reserved_bytes, lmq_gpu_free_bytes,
    lmq_slots_in_use, lmq_admission_waiting                 gauges per host group
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from workers.metrics import OUTCOMES, read_group_metrics, read_model_metrics

log = logging.getLogger(__name__)

HISTOGRAMS = {
    "tokens_per_second": ("lmq_tokens_per_second", "Generation speed of succeeded predictions."),
    "time_to_first_token_s": (
        "lmq_time_to_first_token_seconds",
        "Time to first token of succeeded predictions.",
    ),
    "queue_wait_s": ("lmq_queue_wait_seconds", "Time jobs waited in the queue before running."),
}
GROUP_GAUGES = {
    "lmq_gpu_budget_bytes": ("budget_bytes", "GPU memory budget of the host group."),
    "lmq_gpu_reserved_bytes": (
        "reserved_bytes",
        "GPU memory reserved by loaded models and admitted jobs.",
    ),
    "lmq_gpu_free_bytes": ("free_bytes", "GPU memory of the budget still free."),
    "lmq_slots_in_use": ("slots_in_use", "Predictions admitted and running now."),
    "lmq_admission_waiting": ("waiting", "Jobs waiting for admission."),
}
# Per loaded instance (admission's first layer): series name -> (field, help).
INSTANCE_GAUGES = {
    "lmq_instance_kv_cells": ("cells", "KV cells of the loaded instance (its context length)."),
    "lmq_instance_kv_cells_reserved": ("reserved_cells", "KV cells reserved by admitted jobs."),
    "lmq_instance_parallel": ("parallel", "Parallel predictions of the loaded instance."),
    "lmq_instance_slots_in_use": ("slots_in_use", "Admitted predictions on the instance."),
    "lmq_instance_waiting": ("waiting", "Jobs waiting for the instance's cells or a slot."),
}
# A group whose host memory is unknown has no byte budget: these series leave it out.
BYTE_BUDGET_GAUGES = frozenset({"lmq_gpu_budget_bytes", "lmq_gpu_free_bytes"})


class PoolCollector(Collector):
    """Collects the pool's metrics from the Redis at `redis_url` on every scrape."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    def describe(self) -> Iterator[Metric]:
        # Names only, so registering needs no Redis round trip.
        yield from model_families({})
        yield from group_families({})

    def collect(self) -> Iterator[Metric]:
        try:
            models = read_model_metrics(self.redis_url)
        except Exception:  # a scrape must not break Flower's own /metrics
            log.warning("metrics: cannot read the pool's counters", exc_info=True)
            models = {}
        yield from model_families(models)
        try:
            groups = read_group_metrics(self.redis_url)
        except Exception:
            log.warning("metrics: cannot read admission status", exc_info=True)
            groups = {}
        yield from group_families(groups)


def model_families(models: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    queued = GaugeMetricFamily(
        "lmq_jobs_queued", "Jobs waiting in the model's queue.", labels=["model"]
    )
    by_priority = GaugeMetricFamily(
        "lmq_jobs_queued_by_priority", "Jobs waiting in the model's queue, per priority.",
        labels=["model", "priority"]
    )
    tenants = GaugeMetricFamily(
        "lmq_tenants_waiting", "Tenants with jobs waiting in the model's queue (taking turns; "
        "jobs without a tenant count as one).", labels=["model"]
    )
    running = GaugeMetricFamily("lmq_jobs_running", "Jobs running now.", labels=["model"])
    finished = CounterMetricFamily(
        "lmq_jobs_finished", "Jobs that ended, by outcome.", labels=["model", "outcome"]
    )
    tokens = CounterMetricFamily("lmq_predicted_tokens", "Tokens generated.", labels=["model"])
    for model, snap in models.items():
        queued.add_metric([model], snap["queued"])
        for priority, waiting in (snap.get("queued_by_priority") or {}).items():
            by_priority.add_metric([model, priority], waiting)
        tenants.add_metric([model], snap.get("tenants_waiting", 0))
        running.add_metric([model], snap["running"])
        for outcome in OUTCOMES:
            finished.add_metric([model, outcome], snap[outcome])
        tokens.add_metric([model], snap["predicted_tokens"])
    yield from (queued, by_priority, tenants, running, finished, tokens)
    for obs, (name, text) in HISTOGRAMS.items():
        family = HistogramMetricFamily(name, text, labels=["model"])
        for model, snap in models.items():
            hist = snap[obs]
            buckets = [(f"{b:g}", n) for b, n in hist["buckets"].items()]
            buckets.append(("+Inf", hist["count"]))
            family.add_metric([model], buckets, sum_value=hist["sum"])
        yield family


def group_families(groups: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    for series, (field, text) in GROUP_GAUGES.items():
        family = GaugeMetricFamily(series, text, labels=["group"])
        for group, figures in groups.items():
            if series in BYTE_BUDGET_GAUGES and not figures.get("host_memory_known", True):
                continue
            family.add_metric([group], figures[field])
        yield family
    for series, (field, text) in INSTANCE_GAUGES.items():
        family = GaugeMetricFamily(series, text, labels=["group", "instance", "model"])
        for group, figures in groups.items():
            for inst in figures.get("instances", []):
                family.add_metric([group, inst["identifier"], inst["model"]], inst[field])
        yield family


_registered: dict[str, PoolCollector] = {}


def register_default(redis_url: str) -> PoolCollector:
    """Add the collector to prometheus_client's default registry (Flower's) once."""
    if redis_url not in _registered:
        collector = PoolCollector(redis_url)
        REGISTRY.register(collector)
        _registered[redis_url] = collector
    return _registered[redis_url]


def pool_registry(redis_url: str) -> CollectorRegistry:
    """A registry with only the pool's metrics (for `lmq metrics serve`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(redis_url))
    return registry
