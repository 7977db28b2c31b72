"""loadModel and getOrLoad channels: resolve, reserve VRAM, report progress, register.

Concurrent getOrLoad calls for one model share a single load, as LM Studio does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from simulator import errors
from simulator.catalog import Instance
from simulator.connection import Channel
from simulator.jit import ttl_from_ms
from simulator.kvconfig import stack_fields

_PROGRESS_STEPS = 4
_loads_in_flight: dict[tuple[int, str], asyncio.Future[Instance]] = {}


def _resolve_key(channel: Channel, name: str) -> str:
    catalog = channel.conn.state.catalog
    key = catalog.model_key_for(name)
    if key is None or catalog.models[key].type != channel.conn.ns:
        raise errors.model_not_found({"identifier": name})
    return key


async def _load(channel: Channel, key: str, identifier: str | None, progress_type: str) -> Instance:
    state = channel.conn.state
    fields = stack_fields(channel.param.get("loadConfigStack"))
    inst = state.load(key, identifier, fields)  # reserves VRAM first, so OOM fails fast
    try:
        delay_s = state.config.timing.load_delay_s
        for step in range(1, _PROGRESS_STEPS + 1):
            if delay_s > 0:
                await asyncio.sleep(delay_s / _PROGRESS_STEPS)
            await channel.send({"type": progress_type, "progress": step / _PROGRESS_STEPS})
    except BaseException:
        state.unload(inst)  # the client went away mid-load
        raise
    return inst


async def load_model(channel: Channel) -> None:
    state = channel.conn.state
    key = _resolve_key(channel, channel.param.get("modelKey", ""))
    await channel.send({"type": "resolved", "info": state.catalog.model_info(key)})
    inst = await _load(channel, key, channel.param.get("identifier"), "progress")
    state.lifetimes.started(inst, ttl_from_ms(channel.param.get("ttlMs")), jit=False)
    await channel.send({"type": "success", "info": state.catalog.instance_info(inst)})
    await channel.close()


async def get_or_load(channel: Channel) -> None:
    state = channel.conn.state
    name = channel.param.get("identifier", "")
    inst = state.catalog.find_instance({"identifier": name}, channel.conn.ns)
    if inst is None:
        key = _resolve_key(channel, name)
        inst = state.catalog.find_instance({"identifier": key}, channel.conn.ns)
    if inst is not None:
        state.lifetimes.touch(inst)
        await channel.send({"type": "alreadyLoaded", "info": state.catalog.instance_info(inst)})
        await channel.close()
        return
    inst = await _shared_load(channel, key)
    await channel.send({"type": "loadSuccess", "info": state.catalog.instance_info(inst)})
    await channel.close()


async def _shared_load(channel: Channel, key: str) -> Instance:
    state = channel.conn.state
    flight_key = (id(state), key)
    pending = _loads_in_flight.get(flight_key)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
    _loads_in_flight[flight_key] = future
    try:
        await _evict_other_jit(channel)
        await channel.send({"type": "startLoading", "identifier": key,
                            "info": state.catalog.model_info(key)})
        inst = await _load(channel, key, None, "loadProgress")
        state.lifetimes.started(inst, ttl_from_ms(channel.param.get("loadTtlMs")), jit=True)
        future.set_result(inst)
        return inst
    except BaseException as exc:
        aborted = exc if isinstance(exc, Exception) else errors.simulated("Load aborted")
        future.set_exception(aborted)
        future.exception()  # mark retrieved: waiters may not exist
        raise
    finally:
        _loads_in_flight.pop(flight_key, None)


async def _evict_other_jit(channel: Channel) -> None:
    """LM Studio's auto-evict: a JIT load first unloads the other JIT-loaded models."""
    state = channel.conn.state
    if not state.config.server.jit_auto_evict:
        return
    for other in state.lifetimes.other_jit():
        await channel.send({"type": "unloadingOtherJITModel",
                            "info": state.catalog.instance_info(other)})
        state.lifetimes.evict(other)


CHANNELS: dict[str, Any] = {"loadModel": load_model, "getOrLoad": get_or_load}
