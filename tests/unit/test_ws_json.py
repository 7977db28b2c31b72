"""LM Studio's websocket messages decoded by msgspec (`workers.lmstudio.ws_json`): the same
values as the `json` module, its fallbacks, and the real SDK against the simulator."""

from __future__ import annotations

import json
import random
import struct

import lmstudio as lms
import pytest
from httpx_ws import _api

from simulator.testing import running_simulator
from workers.lmstudio import ws_json
from workers.lmstudio.ws_json import MsgspecJson

EMBED = "text-embedding-nomic-embed-text-v1.5"


@pytest.fixture()
def plain_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx_ws as it ships (and as it is again after the test)."""
    monkeypatch.setattr(_api, "json", json)


def test_install_swaps_what_httpx_ws_decodes_with_once(plain_json: None) -> None:
    assert ws_json.install()
    assert _api.json is MsgspecJson
    assert ws_json.install()  # a second session in the process: already there
    assert _api.json is MsgspecJson


def test_install_leaves_an_httpx_ws_that_no_longer_uses_json_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    other = object()
    monkeypatch.setattr(_api, "json", other)
    assert not ws_json.install()
    assert _api.json is other


def test_messages_decode_to_what_json_gives() -> None:
    rng = random.Random(7)
    doubles = [struct.unpack("d", rng.randbytes(8))[0] for _ in range(5000)]
    floats = [x for x in doubles if x == x and abs(x) != float("inf")]
    floats += [rng.gauss(0, 0.05) for _ in range(5000)] + [-0.0, 5e-324, 1.7976931348623157e308]
    message = json.dumps({"type": "rpcResult", "callId": 3, "result": {
        "embedding": floats, "text": "naïve 😀 \u2028", "big": 2**70, "none": None}})
    assert MsgspecJson.loads(message) == json.loads(message)
    assert MsgspecJson.loads(message.encode()) == json.loads(message)


def test_what_only_json_accepts_and_malformed_messages_go_to_json() -> None:
    assert MsgspecJson.loads('{"x": 1e400}') == {"x": float("inf")}
    nan = MsgspecJson.loads("[NaN]")[0]
    assert nan != nan
    with pytest.raises(json.JSONDecodeError):
        MsgspecJson.loads('{"type": "rpcResult", ')


def test_the_sdk_embeds_the_same_vector_through_it(plain_json: None) -> None:
    with running_simulator() as sim:
        with lms.Client(sim.host) as client:
            before = client.embedding.model(EMBED).embed("the same text, both ways")
        assert ws_json.install()
        with lms.Client(sim.host) as client:
            after = client.embedding.model(EMBED).embed("the same text, both ways")
    assert len(after) > 100
    assert after == before
