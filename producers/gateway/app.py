"""The gateway's ASGI app: `create_app()` for uvicorn (or any ASGI server).

Routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings (`inference`),
/v1/files (`files`), /v1/batches (`batches`), /health, /metrics (the pool's Prometheus
series), and the OpenAPI docs at /docs and /openapi.json.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from producers.gateway import batches, errors, files, inference
from producers.gateway.auth import KeyRing, parse_api_keys
from producers.gateway.batch_advancer import BatchAdvancer
from producers.gateway.host_guard import LoopbackHostOnly
from producers.gateway.state import Gateway, GatewayDep, TenantDep
from workers.prometheus import pool_registry
from workers.settings import Settings, get_settings


def keyring_from(settings: Settings) -> KeyRing:
    text = settings.api_keys.get_secret_value() if settings.api_keys else None
    return KeyRing(parse_api_keys(text))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    keyring = keyring_from(settings)  # a bad LMQ_API_KEYS fails here, before serving

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = Gateway.open(settings, keyring)
        # Batches advance in the background (validate, enqueue, finalize, expire), resumed
        # from Redis at start: one loop per gateway process.
        app.state.batch_advancer = BatchAdvancer(app.state.gateway)
        app.state.batch_advancer.start()
        try:
            yield
        finally:
            await app.state.batch_advancer.stop()
            await app.state.gateway.aclose()

    app = FastAPI(title="lmstudio-queue gateway", version="1",
                  description="OpenAI-compatible HTTP API over the lmstudio-queue pool.",
                  lifespan=lifespan)
    errors.install(app)
    if not keyring.enabled:  # no key stops a DNS-rebound browser page: its Host does
        app.add_middleware(LoopbackHostOnly)
    for module in (inference, files, batches):
        app.include_router(module.router)
    registry = pool_registry(settings.store_url)

    @app.get("/health", tags=["operations"])
    def health(gw: GatewayDep) -> Any:
        """200 while Redis answers (with the served models), else 503."""
        try:
            served = gw.access.served()
        except redis.RedisError as exc:
            return JSONResponse({"status": "unavailable", "error": f"Redis: {exc}"}, 503)
        return {"status": "ok", "models": sorted(served),
                "workers": sum(len(workers) for workers in served.values())}

    @app.get("/metrics", tags=["operations"])
    def metrics(_owner: TenantDep) -> Response:
        """The pool's Prometheus series (the same as `lmq metrics serve`)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
