"""Pool metrics (placeholder until the metrics module lands)."""

from __future__ import annotations

from celery import Celery


def connect(app: Celery) -> None:
    """Connect the signal handlers that count jobs per model."""
    return None
