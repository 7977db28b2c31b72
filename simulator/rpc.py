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
    engine = conn.state.engine
    text = param.get("inputString", "")
    timing = conn.state.config.timing
    await inst.embed_slots.acquire()
    try:
        if not engine.paced:  # a real model: its own latency, computed off the event loop
            # (its tokenizer too: it waits for the model's lock while another text embeds)
            return {"embedding": await asyncio.to_thread(
                lambda: engine.embed(inst.model, _embedded_text(conn, inst, text)))}
        text = _embedded_text(conn, inst, text)
        latency_s = timing.embedding_latency_s
        if timing.embedding_tokens_per_s > 0:  # token-paced: a longer text holds its slot longer
            latency_s += engine.count_tokens(inst.model, text) / timing.embedding_tokens_per_s
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        return {"embedding": engine.embed(inst.model, text)}
    finally:
        inst.embed_slots.release()


def _embedded_text(conn: Connection, inst: Instance, text: str) -> str:
    """The part of `text` LM Studio embeds: an input whose tokens, with the start and end
    tokens the model adds, exceed the loaded context is truncated to the context, with a
    warning in the server log and no error to the client (LM Studio's llama.cpp engine:
    "Number of tokens in input string (4014) exceeds model context length (2048).
    Truncating to 2048 tokens.", then "At least one last token in strings embedded is not
    SEP", github.com/curvedinf/dir-assistant/issues/19; the same lines with a 512-token
    mxbai-embed-large-v1 in 2026). The warning is this log's `embeddingTruncated` event."""
    kept, tokens = conn.state.engine.embedding_input(inst.model, text, inst.context_length)
    if kept != text or tokens > inst.context_length:
        conn.state.log.record(conn.id, conn.ns, "event", {
            "type": "embeddingTruncated", "identifier": inst.identifier, "tokens": tokens,
            "contextLength": inst.context_length,
            "warning": f"Number of tokens in input string ({tokens}) exceeds model context "
                       f"length ({inst.context_length}). Truncating to "
                       f"{inst.context_length} tokens."})
    return kept


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
