"""The LM Studio boundary: the only place that imports the `lmstudio` SDK.

`session` holds the worker's one scoped `lms.Client` (connect, reconnect, load, token
counts, SDK errors mapped to ours), `prediction` streams a prediction and cancels it,
`prediction_config` checks a job's config against the SDK's schema once more, `images`
uploads a chat's images (and refuses them for a model without vision), `outage` stops
consuming while LM Studio is lost.

May import: the SDK, the shared modules (`workers.contract`, `settings`, `error`). Nothing
else of `workers`.
"""
