"""Idle TTL and JIT auto-evict, as LM Studio does them.

* A model loaded with a TTL (`getOrLoad`'s `loadTtlMs`, `loadModel`'s `ttlMs`; the SDK
  sends 3600 s unless told `ttl=None`) is unloaded once it has been idle that long. Every
  request naming it (an RPC, a prediction) resets its idle timer; a running prediction or
  embedding keeps it from being idle.
* A model `getOrLoad` loads is JIT-loaded. With `server.jit_auto_evict` (LM Studio's
  default), loading one first unloads every other JIT-loaded model, whatever its domain,
  and tells the client with `unloadingOtherJITModel {info}`. Models loaded with
  `loadModel` or at start are never evicted this way.

Each unload is logged as an event (`{"type": "modelUnloaded", "reason": "ttl" | "jitEvict"}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Protocol

from simulator.catalog import Catalog, Instance
from simulator.log import MessageLog


class _State(Protocol):
    """What this needs of `simulator.state.SimState` (which imports this module)."""

    catalog: Catalog
    log: MessageLog

    def unload(self, inst: Instance) -> None: ...


@dataclass
class _Lifetime:
    inst: Instance
    ttl_s: float | None
    jit: bool
    last_used: float
    task: asyncio.Task[None] | None = None


def ttl_from_ms(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return float(value) / 1000 if ok else None


class Lifetimes:
    """Each loaded instance's TTL and JIT flag; unloads idle ones."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self._by_ref: dict[str, _Lifetime] = {}

    def started(self, inst: Instance, ttl_s: float | None, jit: bool) -> None:
        """A load finished (call on the event loop)."""
        life = _Lifetime(inst, ttl_s, jit, time.monotonic())
        self._by_ref[inst.reference] = life
        if ttl_s is not None:
            life.task = asyncio.get_running_loop().create_task(self._expire(life))

    def touch(self, inst: Instance) -> None:
        life = self._by_ref.get(inst.reference)
        if life is not None:
            life.last_used = time.monotonic()

    def forget(self, inst: Instance) -> None:
        """The instance is gone (unloaded by anyone)."""
        life = self._by_ref.pop(inst.reference, None)
        if life is not None and life.task is not None and life.task is not _current_task():
            life.task.cancel()

    def other_jit(self, keep: str | None = None) -> list[Instance]:
        return [life.inst for life in self._by_ref.values()
                if life.jit and life.inst.reference != keep]

    def evict(self, inst: Instance) -> None:
        self._unload(inst, "jitEvict")

    async def _expire(self, life: _Lifetime) -> None:
        assert life.ttl_s is not None
        while True:
            wait_s = life.last_used + life.ttl_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            elif _busy(life.inst):
                life.last_used = time.monotonic()  # idle time counts from the work's end
            else:
                self._unload(life.inst, "ttl")
                return

    def _unload(self, inst: Instance, reason: str) -> None:
        if self.state.catalog.instances.get(inst.identifier) is inst:
            self.state.unload(inst)
            self.state.log.record(0, "", "event", {
                "type": "modelUnloaded", "reason": reason, "identifier": inst.identifier})


def _busy(inst: Instance) -> bool:
    return bool(inst.channels or inst.slots.in_use or inst.slots.waiting
                or inst.embed_slots.in_use or inst.embed_slots.waiting)


def _current_task() -> asyncio.Task[Any] | None:
    with contextlib.suppress(RuntimeError):
        return asyncio.current_task()
    return None
