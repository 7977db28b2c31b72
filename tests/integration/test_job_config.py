"""Job config is the SDK's prediction config, chat input what the SDK accepts: real Redis,
real `celery -A workers worker` processes, the real SDK against the simulator, whose
message log shows what LM Studio was sent."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from lmstudio._kv_config import parse_prediction_config

from producers import InvalidJobError
from producers.local_pool import LocalPool
from producers.redis_server import RedisServer
from tests.support.pool import pool_on_database
from tests.support.vision import VISION, simulator_with_vision
from tests.support.wait import wait_until
from tests.unit.test_prediction_config import EVERY_KEY

CHAT = "llama-3.2-1b-instruct"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def sim() -> Iterator[object]:
    """The default simulator plus a loaded vision model (as LM Studio lists one)."""
    with simulator_with_vision(in_process=False) as running:
        yield running


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, sim: object) -> Iterator[LocalPool]:
    with pool_on_database(redis_server, sim, 9, [CHAT, VISION]) as started:
        yield started


def predict_request(sim: Any, marker: str) -> dict[str, Any]:
    """The creation parameter of the predict channel whose history mentions `marker`."""
    def found() -> dict[str, Any] | None:
        for entry in sim.admin.log(type="channelCreate"):
            message = entry["msg"]
            if message.get("endpoint") == "predict" and marker in str(message):
                return dict(message["creationParameter"])
        return None

    return wait_until(found, timeout=30, message=f"the predict message of {marker}")


def sent_config(request: dict[str, Any]) -> dict[str, Any]:
    """The apiOverride layer of the predict message, read back by the SDK's own parser."""
    layers = request["predictionConfigStack"]["layers"]
    override = next(layer for layer in layers if layer["layerName"] == "apiOverride")
    return dict(parse_prediction_config(override["config"]).to_dict())


def queued(pool: LocalPool, model: str) -> int:
    return int(pool.queue.backend_client.llen("lmq." + model))


def test_every_key_of_the_sdk_config_reaches_lm_studio(pool: LocalPool, sim: Any) -> None:
    marker = f"every key {uuid.uuid4()}"
    result = pool.queue.chat(CHAT, marker, config=EVERY_KEY).result(timeout=60)
    assert sent_config(predict_request(sim, marker)) == EVERY_KEY
    assert result.parsed is not None  # structured JSON output was asked for


def test_snake_case_aliases_and_sdk_objects_arrive_as_camel_case(pool: LocalPool,
                                                                 sim: Any) -> None:
    import lmstudio as lms

    marker = f"snake {uuid.uuid4()}"
    handle = pool.queue.chat(CHAT, marker, config={"max_tokens": 9, "top_p": 0.5, "top_k": 7,
                                                   "stop": ["zzz"], "repeat_penalty": 1.2,
                                                   "min_p_sampling": 0.1})
    handle.result(timeout=60)
    assert sent_config(predict_request(sim, marker)) == {
        "maxTokens": 9, "topPSampling": 0.5, "topKSampling": 7, "stopStrings": ["zzz"],
        "repeatPenalty": 1.2, "minPSampling": 0.1}
    # the worker's log says what was sent (as the SDK parsed it), unmasked
    line = wait_until(lambda: next((text for text in pool.workers[0].log_tail(400).splitlines()
                                    if f"job {handle.id}: chat config(" in text), None),
                      timeout=10, message="the config in the worker's log")
    for shown in ("maxTokens=9", "topPSampling=0.5", "topKSampling=7.0", 'stopStrings=["zzz"]',
                  "repeatPenalty=1.2", "minPSampling=0.1"):
        assert shown in line, line
    marker = f"object {uuid.uuid4()}"
    config = lms.LlmPredictionConfig(max_tokens=5, temperature=0.3)
    result = pool.queue.complete(CHAT, marker, config=config).result(timeout=60)
    assert sent_config(predict_request(sim, marker)) == {"maxTokens": 5, "temperature": 0.3}
    assert result.stats.predicted_tokens_count is not None
    assert result.stats.predicted_tokens_count <= 5


def test_response_format_fills_parsed_for_chat_and_completion(pool: LocalPool) -> None:
    class Book(pydantic.BaseModel):
        title: str
        pages: int

    chat = pool.queue.chat(CHAT, "A book, please", response_format=Book).result(timeout=60)
    assert Book.model_validate(chat.parsed) and isinstance(chat.parsed, dict)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    done = pool.queue.complete(CHAT, "n =", response_format=schema).result(timeout=60)
    assert isinstance(done.parsed, dict) and isinstance(done.parsed["n"], int)


@pytest.mark.parametrize(("config", "message"), [
    ({"maxTokenz": 5}, "did you mean 'maxTokens'"),
    ({"temperature": "warm"}, "temperature: expected `float | null`, got `str`"),
    ({"contextOverflowPolicy": "drop"}, "allowed: 'stopAtLimit'"),
    ({"reasoningParsing": {"enabled": True}}, "missing required field `startString`"),
    ({"raw": {"fields": []}}, "cannot send these to LM Studio"),
])
def test_bad_config_fails_at_submit_and_nothing_is_queued(pool: LocalPool, config: Any,
                                                          message: str) -> None:
    before = queued(pool, CHAT)
    with pytest.raises(InvalidJobError, match=message.replace("|", r"\|")):
        pool.queue.chat(CHAT, "hi", config=config)
    with pytest.raises(InvalidJobError, match=message.replace("|", r"\|")):
        pool.queue.submit({"kind": "completion", "model": CHAT, "prompt": "p",
                           "config": config})
    assert queued(pool, CHAT) == before


def test_wrong_types_and_oversized_inputs_fail_at_submit(pool: LocalPool) -> None:
    before = queued(pool, CHAT)
    with pytest.raises(InvalidJobError, match="not int"):
        pool.queue.chat(CHAT, "hi", config=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidJobError, match="invalid response_format"):
        pool.queue.chat(CHAT, "hi", response_format=["not", "a", "schema"])
    too_long = "x" * (pool.queue.settings.max_prompt_chars + 1)
    with pytest.raises(InvalidJobError, match="LMQ_MAX_PROMPT_CHARS"):
        pool.queue.complete(CHAT, too_long)
    assert queued(pool, CHAT) == before


# --- chat input: what the SDK accepts, images for vision models --------------------------


def tiny_png() -> bytes:
    """A real 1x1 PNG (LM Studio types uploads by their bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


def png_data_url() -> str:
    return "data:image/png;base64," + base64.b64encode(tiny_png()).decode()


def sent_history(sim: Any, marker: str) -> list[dict[str, Any]]:
    return list(predict_request(sim, marker)["history"]["messages"])


def test_an_sdk_chat_and_its_history_data_are_sent_as_the_sdk_sends_them(pool: LocalPool,
                                                                          sim: Any) -> None:
    import lmstudio as lms

    marker = f"sdk chat {uuid.uuid4()}"
    chat = lms.Chat("You are terse.")
    chat.add_user_message("Hello")
    chat.add_assistant_response("Hi.")
    chat.add_user_message(marker)
    result = pool.queue.chat(CHAT, chat, config={"maxTokens": 8}).result(timeout=60)
    assert result.content
    assert sent_history(sim, marker) == chat._get_history()["messages"]

    marker = f"from history {uuid.uuid4()}"
    data = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": marker}]}  # plain strings, as SDK allows
    pool.queue.chat(CHAT, data, config={"maxTokens": 8}).result(timeout=60)
    assert sent_history(sim, marker) == lms.Chat.from_history(data)._get_history()["messages"]


def test_openai_image_parts_reach_a_vision_model_as_uploaded_files(pool: LocalPool, sim: Any,
                                                                   tmp_path: Any) -> None:
    path = tmp_path / "dot.png"
    path.write_bytes(tiny_png())
    for url in (png_data_url(), str(path), path.as_uri()):
        marker = f"describe {uuid.uuid4()}"
        messages = [{"role": "user", "content": [
            {"type": "text", "text": marker}, {"type": "image_url", "image_url": {"url": url}}]}]
        pool.queue.chat(VISION, messages, config={"maxTokens": 8}).result(timeout=60)
        parts = sent_history(sim, marker)[-1]["content"]
        assert parts[0] == {"type": "text", "text": marker}
        assert parts[1]["type"] == "file" and parts[1]["fileType"] == "image", parts
        assert parts[1]["sizeBytes"] == len(tiny_png())


def test_an_image_handle_prepared_by_the_producer_reaches_the_vision_model(
        pool: LocalPool, sim: Any) -> None:
    import lmstudio as lms

    with lms.Client(sim.host) as client:
        handle = client.prepare_image(tiny_png(), name="dot.png")
    marker = f"handle {uuid.uuid4()}"
    chat = lms.Chat()
    chat.add_user_message(marker, images=[handle])
    pool.queue.chat(VISION, chat, config={"maxTokens": 8}).result(timeout=60)
    assert sent_history(sim, marker)[-1]["content"][1] == handle.to_dict()


def test_an_image_for_a_model_without_vision_fails_at_once(pool: LocalPool, sim: Any) -> None:
    marker = f"no vision {uuid.uuid4()}"
    messages = [{"role": "user", "content": [
        {"type": "text", "text": marker},
        {"type": "image_url", "image_url": {"url": png_data_url()}}]}]
    with pytest.raises(InvalidJobError, match=f"{CHAT} has no vision"):
        pool.queue.chat(CHAT, messages).result(timeout=60)
    assert not [entry for entry in sim.admin.log(type="channelCreate") if marker in str(entry)]


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.mark.parametrize(("messages", "message"), [
    ({"messages": [{"role": "robot", "content": "hi"}]}, "Unknown history role: robot"),
    ({"turns": []}, "a dict with a 'messages' key"),
    ([{"role": "user", "content": [image("https://x/y.png")]}], "image URLs are not fetched"),
    ([{"role": "user", "content": [image("/no/such.png")]}], "cannot read image file"),
    ([{"role": "user", "content": [{"type": "audio", "data": "x"}]}], "a content part is"),
    (42, "not int"),
])
def test_bad_chat_input_fails_at_submit_and_nothing_is_queued(pool: LocalPool, messages: Any,
                                                              message: str) -> None:
    before = queued(pool, VISION)
    with pytest.raises(InvalidJobError, match=message):
        pool.queue.chat(VISION, messages)
    assert queued(pool, VISION) == before
