"""`SimulatorAdmin`: a small synchronous client for the `/__sim/` admin API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx


class SimulatorAdmin:
    def __init__(self, host: str, timeout_s: float = 5.0) -> None:
        self.base_url = f"http://{host}/__sim/"
        self.timeout_s = timeout_s

    def _get(self, route: str, **params: Any) -> dict[str, Any]:
        query = {k: _fmt(v) for k, v in params.items() if v is not None}
        response = httpx.get(self.base_url + route, params=query, timeout=self.timeout_s)
        if response.is_error:  # say what the simulator refused, not only the status
            raise httpx.HTTPStatusError(f"simulator admin {route}: {response.status_code} "
                                        f"{response.text}", request=response.request,
                                        response=response)
        body: dict[str, Any] = response.json()
        return body

    # -- observation --------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._get("health")

    def state(self) -> dict[str, Any]:
        return self._get("state")

    def log(self, since: float | None = None, since_seq: int | None = None,
            type: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries {seq, t, conn, ns, dir: in/out/event, msg}; type e.g. 'rpcCall',
        'channelSend:fragment', 'channelSend:cancel'."""
        body = self._get("log", since=since, since_seq=since_seq, type=type, limit=limit)
        entries: list[dict[str, Any]] = body["entries"]
        return entries

    def clear_log(self) -> float:
        """Clear the log and channel stats; returns the server's time."""
        return float(self._get("log/clear")["now"])

    def channels(self) -> list[dict[str, Any]]:
        """Per-channel stats: fragments, cancel_t, fragments_after_cancel, slot times..."""
        channels: list[dict[str, Any]] = self._get("channels")["channels"]
        return channels

    # -- faults and knobs ---------------------------------------------------------
    def faults(self) -> dict[str, Any]:
        return self._get("faults")

    def set_faults(self, *, delay_s: float | None = None, delay_endpoints: list[str] | None = None,
                   drop_after_fragments: int | None = None, drop_times: int | None = None,
                   slow_prefill_s: float | None = None, reply_tokens: int | None = None,
                   cancel_lag_fragments: int | None = None) -> dict[str, Any]:
        return self._get("faults/set", delay_s=delay_s, delay_endpoints=delay_endpoints,
                         drop_after_fragments=drop_after_fragments, drop_times=drop_times,
                         slow_prefill_s=slow_prefill_s, reply_tokens=reply_tokens,
                         cancel_lag_fragments=cancel_lag_fragments)

    def fail_nth(self, endpoint: str, nth: int = 1,
                 title: str = "Simulated failure") -> dict[str, Any]:
        """Fail the nth request to endpoint, counting from now."""
        return self._get("faults/set", fail_endpoint=endpoint, fail_nth=nth, fail_title=title)

    def clear_faults(self) -> dict[str, Any]:
        return self._get("faults/clear")

    def set_timing(self, **knobs: float | int) -> dict[str, Any]:
        """prefill_tokens_per_s, decode_tokens_per_s, embedding_latency_s,
        embedding_tokens_per_s, load_delay_s, reply_min_tokens, reply_max_tokens,
        parallel_slots, vram_bytes."""
        return self._get("timing", **knobs)

    def restart(self, down_s: float = 0.5) -> None:
        """Server closes every socket and its port, then listens again after down_s."""
        self._get("restart", down_s=down_s)

    def reset(self) -> None:
        """Faults back to the config's, log cleared."""
        self._get("reset")

    # -- waiting ------------------------------------------------------------------
    def wait_until(self, predicate: Callable[[], Any], timeout_s: float = 10.0,
                   interval_s: float = 0.02) -> Any:
        """Poll predicate until truthy (returns its value) or raise TimeoutError."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout_s} s")
            time.sleep(interval_s)

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        def ready() -> bool:
            try:
                return bool(self.health().get("ok"))
            except httpx.HTTPError:
                return False
        self.wait_until(ready, timeout_s)


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
