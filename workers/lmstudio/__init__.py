"""The LM Studio boundary: the only place that imports the `lmstudio` SDK.

`session` holds the worker's one scoped `lms.AsyncClient` (connect, reconnect, load, token
counts) on the process's SDK event loop (`loop`), `sdk_call` maps SDK errors to ours and
bounds the wait for LM Studio, `prediction` streams a prediction on that loop and cancels it,
`prediction_config` checks a job's config against the SDK's schema once more, `images`
uploads a chat's images (and refuses them for a model without vision), `outage` stops
consuming while LM Studio is lost.

May import: the SDK, the shared modules (`workers.contract`, `settings`, `error`). Nothing
else of `workers`.
"""
