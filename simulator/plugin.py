"""The plugins namespace, enough for a plugin's tools to be listed and called.

Served (shapes from the SDK's generated schema, `_sdk_models`):
* `registerDevelopmentPlugin` channel: answers `ready` with credentials for the plugin
  `owner/name` of the manifest; they stay valid until the client sends `end`.
* A plugin process authenticates with them and opens `setToolsProvider`; the RPCs
  `setConfigSchematics`, `setGlobalConfigSchematics` and `pluginInitCompleted` are accepted.
* `startToolUseSession` channel (what a tool consumer opens, with `pluginIdentifier`):
  the simulator sends the provider `initSession` (empty plugin configs), answers the
  consumer `sessionReady {toolDefinitions}` from the plugin's `sessionInitialized`, relays
  `callTool` to the plugin and its `toolCallComplete` / `toolCallError` back (call ids as
  the consumer sent them), and `discardSession` to the plugin when the consumer ends.

Not served: prompt preprocessors and generators (their channels get LM Studio's
communicationWarning), plugin configs (always empty), and no predict offers plugin tools.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from simulator.connection import VOID, Channel, Connection
from simulator.errors import SimError


@dataclass
class _Session:
    provider: Channel
    consumer: Channel
    ready: asyncio.Future[list[Any]]
    calls: dict[str, Any] = field(default_factory=dict)  # our call id -> consumer's call id


class PluginHub:
    """Registered plugins, their tools providers and the open tool-use sessions."""

    def __init__(self) -> None:
        self.credentials: dict[str, str] = {}  # clientIdentifier -> "owner/name"
        self.providers: dict[str, Channel] = {}
        self.sessions: dict[str, _Session] = {}


_hubs: weakref.WeakKeyDictionary[Any, PluginHub] = weakref.WeakKeyDictionary()


def hub_of(conn: Connection) -> PluginHub:
    hub = _hubs.get(conn.state)
    if hub is None:
        hub = _hubs[conn.state] = PluginHub()
    return hub


async def register_development_plugin(channel: Channel) -> None:
    manifest = channel.param.get("manifest") or {}
    identifier = f"{manifest.get('owner', '')}/{manifest.get('name', '')}"
    client_id = f"plugin-dev:{identifier}:{uuid.uuid4().hex[:12]}"
    hub = hub_of(channel.conn)
    hub.credentials[client_id] = identifier
    try:
        await channel.send({"type": "ready", "clientIdentifier": client_id,
                            "clientPasskey": uuid.uuid4().hex})
        while (await channel.inbox.get()).get("type") != "end":
            pass
    finally:
        hub.credentials.pop(client_id, None)
    await channel.close()


async def set_tools_provider(channel: Channel) -> None:
    hub = hub_of(channel.conn)
    identifier = hub.credentials.get(channel.conn.client_id or "")
    if identifier is None:
        raise SimError({"title": "Only a registered plugin can provide tools"})
    hub.providers[identifier] = channel
    try:
        while True:
            await _from_provider(hub, await channel.inbox.get())
    finally:
        if hub.providers.get(identifier) is channel:
            del hub.providers[identifier]


async def _from_provider(hub: PluginHub, message: dict[str, Any]) -> None:
    session = hub.sessions.get(str(message.get("sessionId")))
    if session is None:
        return
    kind = message.get("type")
    if kind == "sessionInitialized" and not session.ready.done():
        session.ready.set_result(list(message.get("toolDefinitions") or []))
    elif kind == "sessionInitializationFailed" and not session.ready.done():
        session.ready.set_exception(SimError(dict(message.get("error") or {})))
    elif kind in ("toolCallComplete", "toolCallError", "toolCallStatus", "toolCallWarn"):
        call_id = message.get("callId")
        consumer_id = session.calls.get(str(call_id))
        if consumer_id is None:
            return
        relayed = {k: v for k, v in message.items() if k != "sessionId"}
        relayed["callId"] = consumer_id
        if kind in ("toolCallComplete", "toolCallError"):
            session.calls.pop(str(call_id), None)
        await session.consumer.send(relayed)


async def start_tool_use_session(channel: Channel) -> None:
    hub = hub_of(channel.conn)
    plugin = str(channel.param.get("pluginIdentifier", ""))
    provider = hub.providers.get(plugin)
    if provider is None:
        raise SimError({"title": f"Plugin \"{plugin}\" is not running or provides no tools"})
    session_id = uuid.uuid4().hex
    ready: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    session = hub.sessions[session_id] = _Session(provider, channel, ready)
    try:
        await provider.send({"type": "initSession", "pluginConfig": {"fields": []},
                             "globalPluginConfig": {"fields": []},
                             "workingDirectoryPath": None, "sessionId": session_id})
        await channel.send({"type": "sessionReady", "toolDefinitions": await ready})
        await _relay_calls(session, session_id)
    finally:
        hub.sessions.pop(session_id, None)
        if not provider.closed:
            await provider.send({"type": "discardSession", "sessionId": session_id})
    await channel.close()


async def _relay_calls(session: _Session, session_id: str) -> None:
    while True:
        message = await session.consumer.inbox.get()
        kind = message.get("type")
        if kind == "discardSession":
            return
        call_id = uuid.uuid4().hex
        if kind == "callTool":
            session.calls[call_id] = message.get("callId")
            await session.provider.send({
                "type": "callTool", "sessionId": session_id, "callId": call_id,
                "toolName": message.get("name"), "parameters": message.get("arguments")})
        elif kind == "abortToolCall":
            ours = next((c for c, theirs in session.calls.items()
                         if theirs == message.get("callId")), None)
            if ours is not None:
                await session.provider.send({"type": "abortToolCall", "sessionId": session_id,
                                             "callId": ours})


async def _accepted(conn: Connection, param: Any) -> Any:
    return VOID


RPCS: dict[str, Any] = {"setConfigSchematics": _accepted,
                        "setGlobalConfigSchematics": _accepted,
                        "pluginInitCompleted": _accepted}
CHANNELS: dict[str, Any] = {"registerDevelopmentPlugin": register_development_plugin,
                            "setToolsProvider": set_tools_provider,
                            "startToolUseSession": start_tool_use_session}
