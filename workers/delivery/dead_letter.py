"""Malformed broker entries go to a dead-letter list instead of killing the worker.

The problem. kombu's Redis transport pops an entry off `lmq.<model>` and hands it to the
worker's consumer in the event loop. An entry that is not a JSON object (`LPUSH lmq.m
'garbage'`), or an envelope whose headers, properties or body have the wrong shape, raises
(JSONDecodeError, TypeError, KeyError...) inside that loop; Celery logs "Unrecoverable
error" and the worker process exits. The entry is already popped, so nothing else stalls
on it, but the model's worker is gone.

The fix. `DeadLetterChannel` (the base of the worker's Redis channel, `redis://` and
`rediss://`, see `workers.delivery.held_transport`, which hands it the entries it takes) reads BRPOP
replies itself (kombu 5.x's `Channel._brpop_read`, with the entry parsed here) and:

* checks the entry (`malformed`): UTF-8 JSON object; `properties` an object with a
  `delivery_tag` and a `delivery_info` object naming `exchange` and `routing_key`; headers
  absent or an object; body a string that decodes with its `body_encoding` (base64); and for a
  Celery task message (a `task` header) in JSON, a body `[args list, kwargs object, embed
  object]`;
* a malformed entry is pushed to `lmq:dead:<queue>` (`workers.keys.dead_letters`) as JSON
  `{"queue", "reason", "at" (unix time), "entry" (the raw text, at most
  DEAD_ENTRY_MAX_CHARS)}`, the list kept to the newest DEAD_LETTERS_MAX entries, and one
  ERROR line is logged; the worker goes on serving;
* as a backstop, any other error (not a broker connection error) raised while a well-formed
  entry is handed to the consumer dead-letters it the same way, and drops its delivery from
  kombu's unacked bookkeeping.

Inspect with `redis-cli LRANGE lmq:dead:lmq.<model> 0 -1`; a fixed entry can be pushed back
with LPUSH on its queue.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from time import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str

from workers import keys

log = logging.getLogger(__name__)

DEAD_LETTERS_MAX = 1000  # entries kept per queue (newest)
DEAD_ENTRY_MAX_CHARS = 65536  # raw text kept per entry


def parse_entry(raw: bytes | str) -> tuple[dict[str, Any] | None, str | None]:
    """(payload, None) for a well-formed broker entry, else (None, reason)."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        payload = json.loads(text)
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except ValueError as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(payload, dict):
        return None, f"not a JSON object (a {type(payload).__name__})"
    reason = malformed(payload)
    return (None, reason) if reason else (payload, None)


def malformed(payload: dict[str, Any]) -> str | None:
    """Why a kombu envelope would crash the consumer, or None if it is well-formed."""
    properties = payload.get("properties")
    if not isinstance(properties, dict) or "delivery_tag" not in properties:
        return "properties is not an object with a delivery_tag"
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or not {"exchange", "routing_key"} <= info.keys():
        return "properties.delivery_info is not an object with exchange and routing_key"
    headers = payload.get("headers")
    if headers is not None and not isinstance(headers, dict):
        return f"headers is not an object (a {type(headers).__name__})"
    return _body_problem(payload, properties, headers or {})


def _body_problem(payload: dict[str, Any], properties: dict[str, Any],
                  headers: dict[str, Any]) -> str | None:
    body = payload.get("body")
    if body is None:
        body = ""
    if not isinstance(body, str):
        return f"body is not a string (a {type(body).__name__})"
    data: str | bytes = body
    if properties.get("body_encoding") == "base64":
        try:
            data = base64.b64decode(body)  # as kombu decodes it
        except (binascii.Error, ValueError, TypeError) as exc:
            return f"body is not base64 ({exc})"
    if "task" not in headers or payload.get("content-type") != "application/json":
        return None  # not a JSON task message: Celery rejects what it cannot handle
    try:
        parts = json.loads(data)
    except ValueError:
        return "task body is not JSON"
    if not (isinstance(parts, list) and len(parts) == 3 and isinstance(parts[0], list)
            and isinstance(parts[1], dict) and isinstance(parts[2], dict | None)):
        return "task body is not [args list, kwargs object, embed object]"
    return None


def dead_letter_record(queue: str, raw: bytes | str, reason: str) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return json.dumps({"queue": queue, "reason": reason, "at": round(time(), 3),
                       "entry": text[:DEAD_ENTRY_MAX_CHARS]})


class DeadLetterChannel(kombu_redis.Channel):
    """kombu's Redis channel whose BRPOP reader dead-letters malformed entries."""

    def _brpop_read(self, **options: Any) -> bool:
        # kombu 5.x's `_brpop_read`, with the entry handed to `_deliver_entry`.
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP",
                                                        **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise kombu_redis.Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self._deliver_entry(item, dest)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.7 only
            if flush is not None:
                flush()

    def _deliver_entry(self, item: bytes, queue: str) -> None:
        payload, reason = parse_entry(item)
        if payload is None:
            self.dead_letter(queue, item, reason or "malformed")
            return
        try:
            self.connection._deliver(payload, queue)
        except (*self.connection_errors, *self.channel_errors):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the worker
            self.dead_letter(queue, item, f"{type(exc).__name__} while handling it: {exc}")
            self._forget_delivery(payload)

    def _forget_delivery(self, payload: dict[str, Any]) -> None:
        tag = payload["properties"]["delivery_tag"]
        if tag in self.qos._delivered:
            self.qos.ack(tag)  # out of unacked: it must not be restored later

    def dead_letter(self, queue: str, raw: bytes | str, reason: str) -> None:
        """Push a malformed entry to `lmq:dead:<queue>` (bounded) and log one line."""
        key = keys.dead_letters(queue)
        try:
            with self.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
                pipe.lpush(key, dead_letter_record(queue, raw, reason))
                pipe.ltrim(key, 0, DEAD_LETTERS_MAX - 1)
                pipe.execute()
        except Exception as exc:  # noqa: BLE001 - logged below; the worker keeps serving
            log.error("dropped a malformed entry of queue %s (%s); could not dead-letter "
                      "it: %s", queue, reason, exc)
            return
        log.error("malformed entry of queue %s moved to %s: %s", queue, key, reason)
