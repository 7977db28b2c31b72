"""Request/response endpoints (rpcCall) for every namespace."""

from __future__ import annotations

import asyncio
from typing import Any

from simulator import errors, plugin, repository
from simulator.catalog import Instance
from simulator.connection import VOID, Connection, RpcHandler
from simulator.engine import chat_template
from simulator.upload import store_upload

_DOMAIN = {"llm": "llm", "embedding": "embedding"}


def _instance(conn: Connection, param: Any, key: str = "specifier") -> Instance:
    specifier = (param or {}).get(key)
    inst = conn.state.catalog.resolve(specifier, _DOMAIN.get(conn.ns))
    if inst is None:
        raise errors.model_not_found((specifier or {}).get("query", specifier))
    conn.state.lifetimes.touch(inst)  # a request: the idle timer starts again
    return inst


async def list_loaded(conn: Connection, param: Any) -> Any:
    catalog = conn.state.catalog
    return [catalog.instance_info(i) for i in catalog.instances.values()
            if i.model.type == _DOMAIN.get(conn.ns)]


async def get_model_info(conn: Connection, param: Any) -> Any:
    return conn.state.catalog.instance_info(_instance(conn, param))


async def get_load_config(conn: Connection, param: Any) -> Any:
    return conn.state.catalog.load_config_kv(_instance(conn, param))


async def unload_model(conn: Connection, param: Any) -> Any:
    ident = str((param or {}).get("identifier"))
    inst = conn.state.catalog.instances.get(ident)
    if inst is None or inst.model.type != _DOMAIN.get(conn.ns):
        raise errors.model_not_found({"identifier": ident})
    conn.state.unload(inst)
    return VOID


async def apply_prompt_template(conn: Connection, param: Any) -> Any:
    _instance(conn, param)
    tools = (param.get("opts") or {}).get("toolDefinitions")  # LM Studio renders them too
    return {"formatted": chat_template((param.get("history") or {}).get("messages", []), tools)}


async def count_tokens(conn: Connection, param: Any) -> Any:
    inst = _instance(conn, param)
    return {"tokenCount": conn.state.engine.count_tokens(inst.model, param.get("inputString", ""))}


async def tokenize(conn: Connection, param: Any) -> Any:
    inst = _instance(conn, param)
    return {"tokens": conn.state.engine.tokenize(inst.model, param.get("inputString", ""))}


async def embed_string(conn: Connection, param: Any) -> Any:
    inst = _instance(conn, param, "modelSpecifier")
    text = param.get("inputString", "")
    timing = conn.state.config.timing
    engine = conn.state.engine
    await inst.embed_slots.acquire()
    try:
        if not engine.paced:  # a real model: its own latency, computed off the event loop
            return {"embedding": await asyncio.to_thread(engine.embed, inst.model, text)}
        latency_s = timing.embedding_latency_s
        if timing.embedding_tokens_per_s > 0:  # token-paced: a longer text holds its slot longer
            latency_s += engine.count_tokens(inst.model, text) / timing.embedding_tokens_per_s
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        return {"embedding": engine.embed(inst.model, text)}
    finally:
        inst.embed_slots.release()


async def list_downloaded(conn: Connection, param: Any) -> Any:
    catalog = conn.state.catalog
    return [catalog.model_info(key) for key in catalog.models]


async def version(conn: Connection, param: Any) -> Any:
    return {"version": "0.3.99-sim", "build": 1}


async def upload_file(conn: Connection, param: Any) -> Any:
    param = param or {}
    return store_upload(conn.state.uploads, str(param.get("name", "")),
                        str(param.get("contentBase64", "")))


_MODEL_RPCS: dict[str, RpcHandler] = {
    "listLoaded": list_loaded, "getModelInfo": get_model_info,
    "getLoadConfig": get_load_config, "unloadModel": unload_model,
    "countTokens": count_tokens, "tokenize": tokenize,
}
NAMESPACE_RPCS: dict[str, dict[str, RpcHandler]] = {
    "llm": {**_MODEL_RPCS, "applyPromptTemplate": apply_prompt_template},
    "embedding": {**_MODEL_RPCS, "embedString": embed_string},
    "system": {"listDownloadedModels": list_downloaded, "version": version},
    "files": {"uploadFileBase64": upload_file},
    "repository": dict(repository.RPCS),
    "plugins": dict(plugin.RPCS),
}
