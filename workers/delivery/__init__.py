"""Delivery: how a job reaches a worker thread and how its outcome goes back to Redis.

The Celery pool whose terminate cancels (`pool`), kombu's Redis transport that leases the
jobs a worker holds (`held_transport`), taking them by priority and tenants' fair share with an
optional per-tenant running cap (`tenant_turns`), and the janitor that queues a dead
worker's jobs again (`redelivery`), malformed entries set aside (`dead_letter`), the
STARTED state and stored results of redelivered jobs (`result_store`), and the watcher that
turns a revoke into a cancel (`cancel`).

May import: the shared modules (`workers.contract`, `settings`, `error`, `keys`), Celery and
kombu. Never the job runners, admission, the LM Studio boundary or Flower.
"""
