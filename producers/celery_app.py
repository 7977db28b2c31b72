"""The producer-side Celery app: built from the shared config, knows no task code."""

from __future__ import annotations

from celery import Celery

from workers.celery_config import celery_config
from workers.settings import Settings


def producer_app(settings: Settings) -> Celery:
    """A Celery app that sends tasks by name and reads results; it registers no tasks."""
    app = Celery("lmq-producer", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
