"""Chat input as the SDK takes it, turned into a ChatJob's JSON (no network)."""

from __future__ import annotations

import base64
from pathlib import Path

import lmstudio as lms
import pytest
from lmstudio import FileHandle

from producers.chat_input import chat_messages
from workers.contract import ChatJob
from workers.error import InvalidJobError
from workers.jobs.chat_history import build_history

HANDLE = FileHandle(name="a.png", identifier="f-1", size_bytes=3, file_type="image")


def test_sdk_chats_and_history_data_become_the_sdk_wire_form() -> None:
    chat = lms.Chat("Be brief.")
    chat.add_user_message("Look", images=[HANDLE])
    assert chat_messages(chat) == chat._get_history()
    assert chat_messages(chat._get_history_for_copy()) == chat._get_history()
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    assert chat_messages(plain) == {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    # the worker sends it on as given (plus nothing)
    assert build_history(ChatJob(model="m", messages=chat_messages(chat))) == \
        chat._get_history()


def test_openai_images_become_data_urls_and_file_handles_dicts(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nxyz")
    expected = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    messages = chat_messages([{"role": "user", "content": [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": str(path)}},
        {"type": "image_url", "image_url": {"url": path.as_uri()}}, HANDLE]}])
    parts = messages[0]["content"]
    assert parts[1]["image_url"]["url"] == parts[2]["image_url"]["url"] == expected
    assert parts[3] == HANDLE.to_dict()
    history = build_history(ChatJob(model="m", messages=messages))
    assert [part["type"] for part in history["messages"][0]["content"]] == [
        "text", "image_url", "image_url", "file"]


@pytest.mark.parametrize(("value", "words"), [
    ({"turns": []}, "a dict with a 'messages' key"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}],
     "not fetched"),
    ([{"role": "user", "content": [{"type": "input_audio"}]}], "not 'input_audio'"),
    (3.5, "not float"),
])
def test_what_the_sdk_would_not_take_is_named(value: object, words: str) -> None:
    with pytest.raises(InvalidJobError, match=words):
        chat_messages(value)
