"""lmstudio-queue workers: `celery -A workers worker` finds the app in `workers.celery`.

A job's path, top-down: `tasks` (thin Celery tasks) -> `jobs` (the job runners) ->
`admission` (may this prediction start?) -> `lmstudio` (the one SDK client). Around it:
`celery` builds the app, `lifecycle` starts and stops a worker's parts, `delivery` is how
jobs arrive, are held, cancelled, redelivered and stored, `flower` is the dashboard.

Shared with producers, importing neither Celery tasks nor the SDK: `contract` (jobs,
results, task and queue names), `settings`, `error`, `keys` (Redis key names),
`celery_config`, and the read side of what workers record in Redis: `metrics` (and its
Prometheus view, `prometheus`), `served_registry`, `task_display`, `admission.status`.

This package init stays import-light on purpose: producers import the shared modules
without building the Celery app or loading the SDK. The import directions are checked by
import-linter (`[tool.importlinter]` in pyproject.toml; `tests/unit/test_architecture.py`).
"""
