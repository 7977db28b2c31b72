"""`lmq serve`: an OpenAI-compatible HTTP gateway to the pool, with the Batch API.

    lmq serve [--host H] [--port P]        (or: python -m producers.gateway)

Every request becomes a job on the model's queue through `JobQueue`, like any producer's.
Modules, one reason to change each:

    app              the FastAPI app: routers, /health, /metrics, OpenAPI docs
    server           uvicorn, and where it may listen (127.0.0.1 only without keys)
    auth             LMQ_API_KEYS -> hashed keys -> tenant and default priority
    state            what routes reach: the JobQueue, keys, records; the auth dependency
    errors           OpenAI error objects for every failure
    pool_access      404 unknown model / 503 not served now or queue over LMQ_MAX_QUEUED
    translate        OpenAI bodies -> jobs, through `lmq batch`'s line validator
    tool_choice      OpenAI tool_choice onto LM Studio's tool-use setting (force)
    image_links      http(s) image parts downloaded into data URLs
    formats, sse     results as OpenAI responses and stream chunks
    waiting          result waits; a client that disconnects cancels its job
    result_feed      one shared Redis subscription for every result wait
    inference        /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings
    files, batches   /v1/files and /v1/batches (routes only read and ask)
    batch_input      a batch file's lines validated once, at upload; the jobs kept with it
    batch_lifecycle  a batch's record and statuses, the steps that move it along
    batch_intake     validating: requests checked against the pool, enqueued resumably
    batch_advancer   the background loop advancing every open batch (one per process)
    records          files and batch records in Redis (they survive a restart)
"""

from producers.gateway.app import create_app

__all__ = ["create_app"]
