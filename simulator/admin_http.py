"""HTTP side of the shared port: the SDK's greeting probe and the `/__sim/` admin API.

websockets' process_request only sees GET requests, so every admin action is a GET with
a query string, answered with JSON. Routes are listed in README.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.datastructures import Headers
from websockets.http11 import Response

from simulator.state import SimState

PREFIX = "/__sim/"
_encode = msgspec.json.Encoder().encode
_TIMING_FIELDS = ("prefill_tokens_per_s", "decode_tokens_per_s", "embedding_latency_s",
                  "embedding_tokens_per_s", "load_delay_s", "reply_min_tokens",
                  "reply_max_tokens")


class AdminError(Exception):
    pass


class Simulator(Protocol):
    """What the admin API acts on (`simulator.server.Simulator`, which imports this)."""

    state: SimState
    host: str
    port: int

    def resize_slots(self, size: int) -> None: ...

    async def restart(self, down_s: float = 0.5) -> None: ...


def json_response(status: int, body: Any) -> Response:
    data = _encode(body)
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                       ("Connection", "close")])
    return Response(status, HTTPStatus(status).phrase, headers, data)


def handle(sim: Simulator, raw_path: str) -> Response:
    parts = urlsplit(raw_path)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    route = ROUTES.get(parts.path[len(PREFIX):].strip("/"))
    if route is None:
        return json_response(404, {"error": f"unknown admin route {parts.path}",
                                   "routes": sorted(ROUTES)})
    try:
        return json_response(200, route(sim, query))
    except (AdminError, ValueError, TypeError) as exc:
        return json_response(400, {"error": str(exc)})


def _opt_float(query: dict[str, str], name: str) -> float | None:
    return float(query[name]) if query.get(name, "") != "" else None


def _log(sim: Simulator, q: dict[str, str]) -> Any:
    since_seq = q.get("since_seq")
    limit = q.get("limit")
    entries = sim.state.log.entries(
        since=_opt_float(q, "since"), since_seq=int(since_seq) if since_seq else None,
        limit=int(limit) if limit else None, type_=q.get("type") or None)
    return {"entries": entries, "now": _now()}


def _now() -> float:
    return time.time()


def _health(sim: Simulator, q: dict[str, str]) -> Any:
    return {"ok": True, "host": sim.host, "port": sim.port}


def _state(sim: Simulator, q: dict[str, str]) -> Any:
    return sim.state.snapshot()


def _channels(sim: Simulator, q: dict[str, str]) -> Any:
    return {"channels": sim.state.log.channel_list(), "now": _now()}


def _faults(sim: Simulator, q: dict[str, str]) -> Any:
    return sim.state.faults.snapshot()


def _clear_log(sim: Simulator, q: dict[str, str]) -> Any:
    sim.state.log.clear()
    return {"ok": True, "now": _now()}


def _set_faults(sim: Simulator, q: dict[str, str]) -> Any:
    faults = sim.state.faults
    for name in ("delay_s", "slow_prefill_s"):
        if name in q:
            setattr(faults, name, float(q[name]))
    if "delay_endpoints" in q:
        faults.delay_endpoints = [e for e in q["delay_endpoints"].split(",") if e]
    if "cancel_lag_fragments" in q:
        faults.cancel_lag_fragments = int(q["cancel_lag_fragments"])
    for name in ("drop_after_fragments", "drop_times", "reply_tokens"):
        if name in q:
            setattr(faults, name, int(q[name]) if q[name] not in ("", "none") else None)
    if "fail_endpoint" in q:
        faults.add_fail(q["fail_endpoint"], int(q.get("fail_nth", "1")),
                        q.get("fail_title", "Simulated failure"))
    return faults.snapshot()


def _clear_faults(sim: Simulator, q: dict[str, str]) -> Any:
    sim.state.faults.reset()
    return sim.state.faults.snapshot()


_RESIZE_FIELDS = ("parallel_slots", "vram_bytes")


def _set_timing(sim: Simulator, q: dict[str, str]) -> Any:
    # An unknown knob is an error, not ignored: a test that sets one would measure nothing.
    unknown = set(q) - set(_TIMING_FIELDS) - set(_RESIZE_FIELDS)
    if unknown:
        raise AdminError(f"unknown timing knobs {sorted(unknown)}; settable at run time: "
                         f"{', '.join((*_TIMING_FIELDS, *_RESIZE_FIELDS))}")
    timing = sim.state.config.timing
    for name in _TIMING_FIELDS:
        if name in q:
            kind: Callable[[str], Any] = int if name.startswith("reply_") else float
            setattr(timing, name, kind(q[name]))
    if "parallel_slots" in q:
        sim.resize_slots(int(q["parallel_slots"]))
    if "vram_bytes" in q:
        sim.state.vram.total_bytes = int(q["vram_bytes"])
    return {"timing": timing.model_dump(), "vram": sim.state.vram.snapshot()}


def _restart(sim: Simulator, q: dict[str, str]) -> Any:
    down_s = float(q.get("down_s", "0.5"))
    loop = asyncio.get_running_loop()
    # Answer first: the restart closes this very listener a moment later.
    loop.call_later(0.05, lambda: asyncio.ensure_future(sim.restart(down_s)))
    return {"ok": True, "down_s": down_s}


def _reset(sim: Simulator, q: dict[str, str]) -> Any:
    sim.state.faults.reset(sim.state.config.faults)
    sim.state.log.clear()
    return {"ok": True}


ROUTES: dict[str, Callable[[Simulator, dict[str, str]], Any]] = {
    "health": _health,
    "state": _state,
    "log": _log,
    "log/clear": _clear_log,
    "channels": _channels,
    "faults": _faults,
    "faults/set": _set_faults,
    "faults/clear": _clear_faults,
    "timing": _set_timing,
    "restart": _restart,
    "reset": _reset,
}
