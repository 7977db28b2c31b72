"""Every message the server sends validates against the SDK's own msgspec schemas.

Drives a broad session through the real SDK (including failures), then replays the
server's log: each outgoing frame is matched to the call/channel that caused it and
converted (strictly) into the `lmstudio._sdk_models` type for that endpoint.
"""

from __future__ import annotations

import json
from typing import Any

import lmstudio as lms
import msgspec
import pytest
from lmstudio import _sdk_models as sdk
from websockets.sync.client import connect

from simulator.testing import RunningSimulator
from tests.simulator.conftest import BIG_LLM_KEY, EMBED_KEY, LLM_KEY

pytestmark = pytest.mark.timeout(45)

_TOP_LEVEL = {"rpcResult", "rpcError", "channelSend", "channelClose", "channelError"}


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def _drive_everything(host: str, sim: RunningSimulator) -> None:
    with lms.Client(host) as client:
        llm = client.llm.model(LLM_KEY)
        llm.respond("hello", config={"maxTokens": 5, "stopStrings": ["zzz"]})
        llm.complete("Once upon", config={"maxTokens": 3})
        llm.act("add 1 and 2", [add])
        llm.respond("json", response_format={"type": "object", "properties": {
            "a": {"type": "integer"}}, "required": ["a"]})
        llm.get_info(), llm.get_load_config(), llm.count_tokens("x"), llm.tokenize("x y")
        llm.apply_prompt_template(lms.Chat.from_history("hi"))
        client.llm.list_loaded(), client.list_downloaded_models()
        big = client.llm.model(BIG_LLM_KEY)
        big.unload()
        extra = client.llm.load_new_instance(LLM_KEY, "extra")
        extra.unload()
        emb = client.embedding.model(EMBED_KEY)
        emb.embed("text"), emb.get_info(), emb.get_load_config(), emb.count_tokens("a")
        client.embedding.list_loaded()
        with pytest.raises(lms.LMStudioModelNotFoundError):
            client.llm.model("missing")
        with pytest.raises(lms.LMStudioPredictionError):
            llm.respond("word " * 5000)
        sim.admin.set_faults(reply_tokens=500)
        stream = llm.respond_stream("long")
        for i, _ in enumerate(stream):
            if i == 1:
                stream.cancel()
        stream.result()
        sim.admin.fail_nth("tokenize", 1)
        with pytest.raises(lms.LMStudioServerError):
            llm.tokenize("boom")


def _schema_for(ns: str, endpoint: str, *, channel: bool) -> Any:
    """The SDK's declared type, read off its Pseudo<Ns><Rpc|Channel><Endpoint> struct."""
    kind = "Channel" if channel else "Rpc"
    pseudo = getattr(sdk, f"Pseudo{ns.capitalize()}{kind}{endpoint[0].upper()}{endpoint[1:]}")
    wanted = "to_client_packet" if channel else "returns"
    return next(f.type for f in msgspec.structs.fields(pseudo) if f.name == wanted)


def _check(entry: dict[str, Any], origin: dict[tuple[int, str, int], tuple[str, str]]) -> str:
    msg, conn = entry["msg"], entry["conn"]
    if "success" in msg:  # auth reply
        assert msg == {"success": True}
        return "auth"
    kind = msg["type"]
    assert kind in _TOP_LEVEL, msg
    if kind in ("rpcError", "channelError"):
        msgspec.convert(msg["error"], sdk.SerializedLMSExtendedError)
    elif kind == "rpcResult":
        ns, endpoint = origin[(conn, "call", msg["callId"])]
        if "result" in msg:
            msgspec.convert(msg["result"], _schema_for(ns, endpoint, channel=False))
    elif kind == "channelSend":
        ns, endpoint = origin[(conn, "channel", msg["channelId"])]
        inner = msg["message"]
        if inner["type"] == "error":  # handled by the SDK outside the generated union
            msgspec.convert(inner["error"], sdk.SerializedLMSExtendedError)
        else:
            msgspec.convert(inner, _schema_for(ns, endpoint, channel=True))
        return f"{endpoint}:{inner['type']}"
    return kind


def test_every_sent_message_matches_sdk_schemas(simulator: RunningSimulator) -> None:
    _drive_everything(simulator.host, simulator)
    entries = simulator.admin.log()
    origin: dict[tuple[int, str, int], tuple[str, str]] = {}
    seen: set[str] = set()
    for entry in entries:
        msg = entry["msg"]
        if entry["dir"] == "in" and msg.get("type") == "rpcCall":
            origin[(entry["conn"], "call", msg["callId"])] = (entry["ns"], msg["endpoint"])
        elif entry["dir"] == "in" and msg.get("type") == "channelCreate":
            origin[(entry["conn"], "channel", msg["channelId"])] = (entry["ns"], msg["endpoint"])
        elif entry["dir"] == "out":
            seen.add(_check(entry, origin))
    expected = {
        "auth", "rpcResult", "rpcError", "channelError", "channelClose",
        "predict:promptProcessingProgress", "predict:fragment", "predict:success",
        "predict:error", "predict:toolCallGenerationStart", "predict:toolCallGenerationEnd",
        "predict:toolCallGenerationNameReceived",
        "predict:toolCallGenerationArgumentFragmentGenerated",
        "getOrLoad:alreadyLoaded", "getOrLoad:startLoading", "getOrLoad:loadProgress",
        "getOrLoad:loadSuccess", "loadModel:resolved", "loadModel:progress", "loadModel:success",
    }
    assert expected <= seen, expected - seen


def test_raw_websocket_frames_are_text_json(simulator: RunningSimulator) -> None:
    with connect(f"ws://{simulator.host}/llm") as ws:
        ws.send(json.dumps({"authVersion": 1, "clientIdentifier": "a", "clientPasskey": "b"}))
        assert json.loads(ws.recv()) == {"success": True}
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "listLoaded", "callId": 1}))
        frame = ws.recv()
        assert isinstance(frame, str)
        reply = json.loads(frame)
        assert reply["type"] == "rpcResult" and reply["callId"] == 1
        msgspec.convert(reply["result"], sdk.LlmRpcListLoadedReturns)
        ws.send("not json")
        assert json.loads(ws.recv())["type"] == "communicationWarning"
