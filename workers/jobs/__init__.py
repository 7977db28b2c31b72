"""Job runners: what a task does with a parsed job, between the broker and LM Studio.

`execution.execute` is the body of every task (stored result of a redelivery, contract
parse, cancel token, progress, REVOKED with the partial result); `chat` and `embedding`
run the three kinds of job; `context` is what a runner gets (session, gate, token,
progress), `runtime` the per-process parts the worker's start-up installs; the rest shape
the request (`chat_history`, `predict_config`, `prompt_bound`) and report on it
(`progress`).

May import: the shared modules, `workers.delivery` (results, cancel tokens),
`workers.admission` and `workers.lmstudio`. Never `workers.tasks`, `workers.lifecycle` or
`workers.celery` (they import this).
"""
