"""Run the gateway with uvicorn: where it listens, and what it says at start.

With no LMQ_API_KEYS anyone who can connect can use the pool, so the gateway then listens
on 127.0.0.1 only (as Flower does without auth) and says so; asking for another address
without keys is refused with one line.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from producers.gateway.app import create_app, keyring_from
from workers.error import ConfigError
from workers.settings import Settings

LOCALHOST = "127.0.0.1"
log = logging.getLogger("lmq.gateway")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_host(settings: Settings, host: str | None) -> str:
    """The address to bind: the asked one, or 127.0.0.1 when no API key is configured."""
    if keyring_from(settings).enabled:
        return host or settings.gateway_host
    if host and not _loopback(host):
        raise ConfigError(f"no LMQ_API_KEYS: the gateway serves 127.0.0.1 only, not {host}; "
                          "set LMQ_API_KEYS=KEY=TENANT to listen on other addresses")
    return LOCALHOST


def run(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    bound = listen_host(settings, host)
    port = settings.gateway_port if port is None else port
    if not keyring_from(settings).enabled:
        print(f"lmq serve: no LMQ_API_KEYS set: no auth, listening on {LOCALHOST} only "
              "(set LMQ_API_KEYS to serve other machines)", file=sys.stderr, flush=True)
    print(f"lmq serve: OpenAI-compatible API at http://{bound}:{port}/v1 "
          f"(docs at /docs)", file=sys.stderr, flush=True)
    import uvicorn

    uvicorn.run(create_app(settings), host=bound, port=port, log_level="info",
                timeout_graceful_shutdown=30)


@contextmanager
def serve_in_thread(settings: Settings, host: str = LOCALHOST) -> Iterator[str]:
    """A real uvicorn server on a free port, in a thread (tests, benchmarks): yields its
    base URL (`http://host:port/v1`), and stops it afterwards."""
    import uvicorn

    config = uvicorn.Config(create_app(settings), host=host, port=0, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="lmq-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start (see its log)")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
