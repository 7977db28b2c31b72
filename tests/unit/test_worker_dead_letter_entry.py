"""Which broker entries `workers.delivery.dead_letter` treats as malformed (no network)."""

from __future__ import annotations

import base64
import json

import pytest

from workers.delivery.dead_letter import DEAD_ENTRY_MAX_CHARS, dead_letter_record, parse_entry


def envelope(**changes: object) -> dict[str, object]:
    body = base64.b64encode(json.dumps([[{"kind": "chat"}], {}, {}]).encode()).decode()
    good: dict[str, object] = {
        "body": body, "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"task": "lmq.chat", "id": "x"},
        "properties": {"delivery_tag": "t1", "body_encoding": "base64",
                       "delivery_info": {"exchange": "", "routing_key": "lmq.m"}},
    }
    return {**good, **changes}


def test_a_well_formed_task_message_passes() -> None:
    payload, reason = parse_entry(json.dumps(envelope()).encode())
    assert reason is None and payload == envelope()


def test_a_foreign_content_type_is_left_to_celery() -> None:  # it rejects it by itself
    raw = json.dumps(envelope(body=base64.b64encode(b"\x80\x04pickle").decode(),
                              **{"content-type": "application/x-python-serialize"}))
    assert parse_entry(raw)[1] is None


@pytest.mark.parametrize("raw, words", [
    (b"not json at all", "not JSON"),
    (b"\xff\xfe", "UTF-8"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps(envelope(headers=[1, 2])), "headers"),
    (json.dumps(envelope(properties={"delivery_tag": "t"})), "delivery_info"),
    (json.dumps(envelope(properties=None)), "delivery_tag"),
    (json.dumps(envelope(body="")), "task body"),
    (json.dumps(envelope(body="é¿")), "base64"),
    (json.dumps(envelope(body=base64.b64encode(b"5").decode())), "[args"),
    (json.dumps(envelope(body=7)), "not a string"),
])
def test_malformed_entries_say_why(raw: bytes | str, words: str) -> None:
    payload, reason = parse_entry(raw)
    assert payload is None and reason is not None and words in reason


def test_the_dead_letter_record_is_bounded_json() -> None:
    record = json.loads(dead_letter_record("lmq.m", b"x" * (DEAD_ENTRY_MAX_CHARS + 10), "why"))
    assert record["queue"] == "lmq.m" and record["reason"] == "why" and record["at"] > 0
    assert len(record["entry"]) == DEAD_ENTRY_MAX_CHARS
