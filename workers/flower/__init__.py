"""Flower, run as `celery -A workers flower`: our options and auth check (`config`) and the
task page's view of jobs and results (`view`). The pool's Prometheus metrics that Flower
serves are `workers.prometheus` (shared with `lmq metrics`).

May import: the shared modules (`workers.metrics`, `prometheus`, `task_display` among them)
and Flower. Never the job runners, admission internals or the LM Studio boundary.
"""
