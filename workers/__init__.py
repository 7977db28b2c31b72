"""lmstudio-queue workers: `celery -A workers worker` finds the app in `workers.celery`.

This package init stays import-light on purpose: producers import `workers.contract`,
`workers.settings` and `workers.error` without building the Celery app or loading the SDK.
"""
