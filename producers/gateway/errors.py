"""Errors as OpenAI error objects: `{"error": {"message", "type", "param", "code"}}`.

Routes raise `ApiError`; the handlers here also turn the pool's own errors, request
validation failures and unknown routes into the same shape, so the official clients raise
their matching classes (AuthenticationError, NotFoundError, BadRequestError, ...).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from workers.error import BadJobError, JobTimeoutError, LmqError

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5  # what a 503 asks a client to wait: about a worker's start-up time


class ApiError(Exception):
    """An HTTP error in OpenAI's format."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.code, self.param, self.headers = code, param, headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def not_found(message: str, code: str = "not_found") -> ApiError:
    return ApiError(404, message, code=code)


def unavailable(message: str, code: str) -> ApiError:
    return ApiError(503, message, kind="server_error", code=code,
                    headers={"Retry-After": str(RETRY_AFTER_S)})


def from_job_error(exc: LmqError) -> ApiError:
    """A job's own error (raised while waiting for its result) as an HTTP error."""
    if isinstance(exc, BadJobError):
        return ApiError(400, str(exc), code=type(exc).__name__)
    if isinstance(exc, JobTimeoutError):
        return ApiError(504, str(exc), kind="server_error", code="timeout")
    return ApiError(500, str(exc), kind="server_error", code=type(exc).__name__)


def _json(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def install(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _json(exc)

    async def lmq_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LmqError)
        return _json(from_job_error(exc))

    async def invalid(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return _json(bad_request(f"{where or 'body'}: {first['msg']}", param=where or None))

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = "not_found" if exc.status_code == 404 else None
        return _json(ApiError(exc.status_code, str(exc.detail), code=code))

    async def redis_down(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, redis.RedisError)
        first = (str(exc).splitlines() or [""])[0]
        log.warning("gateway: Redis did not answer: %s: %s", type(exc).__name__, first)
        return _json(unavailable(f"the pool's Redis did not answer ({type(exc).__name__}: "
                                 f"{first}); retry later", code="redis_unavailable"))

    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("gateway: unexpected error", exc_info=exc)
        first = (str(exc).splitlines() or [""])[0]
        return _json(ApiError(500, f"unexpected error {type(exc).__name__}: {first} (see the "
                              "gateway's log)", kind="server_error", code="internal_error"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(LmqError, lmq_error)
    app.add_exception_handler(redis.RedisError, redis_down)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
