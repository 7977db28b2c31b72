"""The simulator server: one port for websockets, the greeting probe and the admin API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from simulator import admin_http, loading, plugin, predict, repository
from simulator.config import SimConfig, load_config
from simulator.connection import ChannelHandler, Connection
from simulator.engine import Engine
from simulator.engine_choice import make_engine
from simulator.gpu import SlotPool
from simulator.rpc import NAMESPACE_RPCS
from simulator.state import SimState

NAMESPACE_CHANNELS: dict[str, dict[str, ChannelHandler]] = {
    "llm": {**loading.CHANNELS, **predict.CHANNELS},
    "embedding": dict(loading.CHANNELS),
    "repository": dict(repository.CHANNELS),
    "plugins": dict(plugin.CHANNELS),
}


class Simulator:
    def __init__(self, config: SimConfig | dict[str, Any] | str | None = None,
                 engine: Engine | None = None) -> None:
        self.config = load_config(config)
        if engine is None:  # the config file's `engine` (e.g. "real")
            engine = make_engine(self.config.engine, self.config.timing, self.config.real)
        self.state = SimState(self.config, engine)
        self.host = "127.0.0.1"
        self.port = 0
        self._server: Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await serve(
            self._handle, host, port, process_request=self._process_request,
            max_size=None, compression=None)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every socket (clients see a disconnect)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self.state.log.record(0, "", "event", {"type": "serverStopped"})

    async def restart(self, down_s: float = 0.5) -> None:
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start(self.host, self.port)
        self.state.log.record(0, "", "event", {"type": "serverStarted"})

    async def close(self) -> None:
        """Stop and delete the GGUF files if they live in a temp dir we made."""
        await self.stop()
        self.state.catalog.close()
        close_engine = getattr(self.state.engine, "close", None)
        if close_engine is not None:
            close_engine()

    @property
    def running(self) -> bool:
        return self._server is not None

    def resize_slots(self, size: int) -> None:
        self.config.timing.parallel_slots = size
        for inst in self.state.catalog.instances.values():
            if inst.slots.in_use == 0 and inst.slots.waiting == 0:
                inst.slots, inst.parallel = SlotPool(size), size

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path
        if path.split("?")[0] == "/lmstudio-greeting":
            return admin_http.json_response(200, {"lmstudio": True})
        if path.startswith(admin_http.PREFIX):
            return admin_http.handle(self, path)
        if path.split("?")[0].strip("/") not in NAMESPACE_RPCS:
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown namespace\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        ns = ws.request.path.split("?")[0].strip("/") if ws.request else ""
        conn = Connection(self.state, ws, ns, NAMESPACE_RPCS.get(ns, {}),
                          NAMESPACE_CHANNELS.get(ns, {}))
        await conn.run()


async def run_forever(host: str, port: int, config: SimConfig | dict[str, Any] | str | None,
                      engine: Engine | None = None) -> None:
    sim = Simulator(config, engine)
    await sim.start(host, port)
    try:
        print(f"SIMULATOR_READY {sim.host}:{sim.port} models_dir={sim.state.catalog.models_dir}",
              flush=True, file=sys.stdout)
    except BrokenPipeError:  # its starter stopped before reading the line: no one will use it
        # stdout to /dev/null, or Python's own flush at exit fails on the closed pipe too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        with contextlib.suppress(OSError):
            print("simulator: stopped, the process that started it is gone", file=sys.stderr)
        await sim.close()
        return
    stop = asyncio.get_running_loop().create_future()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.cancel)
    try:
        await stop  # until Ctrl-C / SIGTERM
    except asyncio.CancelledError:
        pass
    finally:
        await sim.close()


def serve_forever(host: str, port: int, config_path: str | None,
                  engine: str | None = None) -> None:
    """Run a simulator until interrupted or SIGTERM (what `lmq sim` calls).

    `engine` overrides the config file's `engine` (default "deterministic").
    """
    config = load_config(config_path, engine)
    built = make_engine(config.engine, config.timing, config.real)
    warm_up = getattr(built, "warm_up", None)
    if warm_up is not None:  # load real models before SIMULATOR_READY
        warm_up([m for m in config.models.values() if m.loaded])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_forever(host, port, config, built))
