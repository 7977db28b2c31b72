"""The lmq tasks: thin wrappers that parse the job contract and run it (`workers.jobs.execution`).

A task returns the result as a JSON dict (ChatResult / CompletionResult / EmbeddingResult).
Bad jobs raise BadJobError subclasses and are never retried; a revoked job ends in REVOKED
with its partial result (see `workers.jobs.execution`).
"""

from __future__ import annotations

from typing import Any

from workers.celery import app
from workers.contract import (
    TASK_CHAT,
    TASK_COMPLETE,
    TASK_EMBED,
    ChatJob,
    CompletionJob,
    EmbeddingJob,
)
from workers.jobs.chat import run_chat, run_completion
from workers.jobs.embedding import run_embedding
from workers.jobs.execution import execute

REQUEST = "workers.delivery.pool:CancellingRequest"  # revoke(terminate=True) -> cancel path
# Celery logs "Task ... succeeded in ...: <result repr>" at INFO; a result (content, stats,
# vectors) is read from the backend, not the log: keep the line short.
RESULT_LOG_CHARS = 160


@app.task(name=TASK_CHAT, bind=True, Request=REQUEST,
          resultrepr_maxsize=RESULT_LOG_CHARS)
def chat(self: Any, job: Any) -> dict[str, Any]:
    return execute(self, job, ChatJob, run_chat)


@app.task(name=TASK_COMPLETE, bind=True, Request=REQUEST,
          resultrepr_maxsize=RESULT_LOG_CHARS)
def complete(self: Any, job: Any) -> dict[str, Any]:
    return execute(self, job, CompletionJob, run_completion)


@app.task(name=TASK_EMBED, bind=True, Request=REQUEST,
          resultrepr_maxsize=RESULT_LOG_CHARS)
def embed(self: Any, job: Any) -> dict[str, Any]:
    return execute(self, job, EmbeddingJob, run_embedding)
