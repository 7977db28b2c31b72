"""The plugins namespace through the SDK's own plugin client (async only: the SDK has no sync
plugin API): a development plugin registers, its tools provider runs, and a tool-use
session lists its tools and calls one."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from lmstudio._sdk_models import PluginsChannelStartToolUseSessionCreationParameter
from lmstudio.json_api import ChannelEndpoint
from lmstudio.plugin._dev_runner import DevPluginClient
from lmstudio.plugin.runner import PluginClient

from simulator.testing import RunningSimulator

pytestmark = pytest.mark.timeout(60)
C = TypeVar("C", bound=PluginClient)

PLUGIN_SOURCE = '''
async def list_provided_tools(ctl):
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    return [add, shout]
'''


class ToolUseSession(ChannelEndpoint[None, Any, Any]):
    """The consumer side, `plugins.startToolUseSession` (in the SDK's schema; SDK 1.5 has no
    client API for it, so the test reads the channel's raw messages)."""

    _API_ENDPOINT = "startToolUseSession"
    _NOTICE_PREFIX = "Tool use session"

    def __init__(self, plugin: str) -> None:
        super().__init__(PluginsChannelStartToolUseSessionCreationParameter._from_api_dict({
            "pluginIdentifier": plugin,
            "pluginConfigSpecifier": {"type": "direct", "config": {"fields": []}}}))

    def iter_message_events(self, contents: Any) -> Iterable[Any]:
        return ()

    def handle_rx_event(self, event: Any) -> None:
        pass


def _plugin_dir(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "plugin.py").write_text(PLUGIN_SOURCE)
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"type": "plugin", "runner": "python", "owner": "lmq-test", "name": "calc"}))
    return tmp_path


def _on(client: C, sim: RunningSimulator) -> C:
    client._api_host = sim.host  # the SDK's plugin client takes no host: it scans ports
    return client


async def _use_tools(sim: RunningSimulator, plugin_dir: Path) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with _on(DevPluginClient(plugin_dir), sim) as dev, \
            dev.register_dev_plugin() as (client_id, client_key), \
            _on(PluginClient(plugin_dir, client_id, client_key), sim) as plugin:
        runner = asyncio.create_task(plugin.run_plugin())
        await asyncio.to_thread(sim.admin.wait_until, lambda: [
            e for e in sim.admin.log(type="rpcCall")
            if e["msg"]["endpoint"] == "pluginInitCompleted"], 20)
        async with dev.plugins._create_channel(ToolUseSession("lmq-test/calc")) as channel:
            stream: Any = channel.rx_stream()
            seen.append(await anext(stream))
            await channel.send_message({"type": "callTool", "callId": 7, "name": "add",
                                        "arguments": {"a": 2, "b": 3}})
            seen.append(await anext(stream))
            await channel.send_message({"type": "callTool", "callId": 8, "name": "shout",
                                        "arguments": {"text": "hi"}})
            seen.append(await anext(stream))
            await channel.send_message({"type": "discardSession"})
        runner.cancel()
    return seen


def test_plugin_tools_are_listed_and_called_async(simulator: RunningSimulator,
                                                  tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the SDK's plugin API is unstable
        ready, added, shouted = asyncio.run(_use_tools(simulator, _plugin_dir(tmp_path)))
    assert ready["type"] == "sessionReady"
    assert [t["function"]["name"] for t in ready["toolDefinitions"]] == ["add", "shout"]
    assert added == {"type": "toolCallComplete", "callId": 7, "result": 5}
    assert shouted == {"type": "toolCallComplete", "callId": 8, "result": "HI"}
    assert _checked_kinds(simulator) >= {
        "registerDevelopmentPlugin:ready", "setToolsProvider:initSession",
        "setToolsProvider:callTool", "setToolsProvider:discardSession",
        "startToolUseSession:sessionReady", "startToolUseSession:toolCallComplete"}


def _checked_kinds(sim: RunningSimulator) -> set[str]:
    """Every message the simulator sent, validated against the SDK's schemas."""
    from tests.simulator.test_conformance import _check
    origin: dict[tuple[int, str, int], tuple[str, str]] = {}
    seen: set[str] = set()
    for entry in sim.admin.log():
        msg = entry["msg"]
        if entry["dir"] == "in" and msg.get("type") == "rpcCall":
            origin[(entry["conn"], "call", msg["callId"])] = (entry["ns"], msg["endpoint"])
        elif entry["dir"] == "in" and msg.get("type") == "channelCreate":
            origin[(entry["conn"], "channel", msg["channelId"])] = (entry["ns"], msg["endpoint"])
        elif entry["dir"] == "out":
            seen.add(_check(entry, origin))
    return seen
