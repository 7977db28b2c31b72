"""A killed worker's jobs go back on their queue within seconds (Redis broker only).

The problem. kombu's Redis transport emulates acknowledgements: a message delivered to a
worker stays in the `unacked` hash (payload, exchange, routing key) and the `unacked_index`
sorted set (delivery time) until the worker acknowledges it. If the worker is SIGKILLed,
nothing restores the message until it is older than the visibility timeout and a restore
sweep runs; the visibility timeout must exceed the longest job (4 h here). RabbitMQ needs
none of this: it requeues a dead consumer's unacknowledged messages when its connection
drops, so this module does nothing for `amqp://` brokers.

The fix. Every worker leases what it holds:

* **record** — the worker's broker transport is kombu's Redis transport whose QoS, when it
  books a delivery into `unacked`/`unacked_index`, also adds the delivery tag to
  `lmq:held:<hostname>` in the same MULTI (`Transport` here, the `broker_transport` of
  worker processes on `redis://` and `rediss://` brokers, set at `celeryd_init`; its
  channel also dead-letters malformed entries, `workers.dead_letter`): no extra round
  trip. The pop itself is atomic too: the channel takes an entry with BLMOVE into
  `lmq:popping:<hostname>|<list>` (not kombu's BRPOP, after which a SIGKILL before the
  booking lost the message for good), and the booking MULTI removes it from there; so no
  instant where a delivered message is unrecorded (`HeldChannel`). (`task_received` adds any
  tag the transport did not record, e.g. with another `broker_transport`: one SADD.)
* **lease** — a heartbeat thread sets `lmq:alive:<hostname>` with a TTL of
  `LMQ_HOLD_LEASE_S` every quarter of it (from start-up, before any job is received), adds
  the hostname to `lmq:held-workers`, and drops from its held set the tags that have left
  `unacked` (acknowledged, or restored);
* **janitor** — on every beat, for every worker in `lmq:held-workers` whose lease key is
  gone, its `popping` entries are pushed back verbatim, and each held tag still in
  `unacked` is moved back to its queue, exactly as kombu's
  `QoS.restore_by_tag` does it: in a WATCH transaction on `unacked`, the tag is removed
  from `unacked` and `unacked_index`, and the payload is pushed back with kombu's own
  `Channel._do_restore_message` (it sets the `redelivered` flag, resolves the exchange and
  routing key through kombu's binding table, and honours priority lists; pushed to the
  consuming end, like kombu's visibility-timeout restore). The transaction also watches
  the dead worker's lease key and gives up if the lease reappears. Two janitors restoring
  one tag: the second finds it gone from `unacked` and restores nothing;
* **restart** — a worker starting with a hostname that holds tags restores them first
  (its previous process is dead: live workers have unique hostnames), before it consumes.

So a killed worker's jobs are queued again `LMQ_HOLD_LEASE_S` (+ one beat) after its last
heartbeat by any live worker of the pool, or when it restarts. Delivery stays
at-least-once: a redelivered job that already finished returns its stored result
(`workers.result_store`); a worker paused (SIGSTOP) past its lease may see its job run
elsewhere too. kombu's own visibility-timeout sweep (`celery_config`) stays as the backstop
for anything else (e.g. a worker configured with another broker transport that died
before its `task_received` SADD).
"""

from __future__ import annotations

import logging
import os
import threading
from ssl import CERT_NONE
from time import monotonic, time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

from workers import keys
from workers.dead_letter import DeadLetterChannel

log = logging.getLogger(__name__)

# Drop a dead worker from the registry only if it is still dead and holds nothing.
FORGET_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
  return 1
end
return 0
"""


class _LeaseBack(Exception):
    """The worker's lease reappeared: leave its messages alone."""


class Redelivery:
    """One worker's held set, lease and janitor, over a dedicated kombu channel."""

    def __init__(self, connection: Any, hostname: str, lease_s: float) -> None:
        self.connection = connection
        self.hostname = hostname
        self.lease_s = lease_s
        self._tags: set[str] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._ready = False
        self._forget: Any = None
        self._channel: Any = None
        self._channel_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="lmq-held-heartbeat",
                                        daemon=True)

    @property
    def channel(self) -> Any:
        """The dedicated kombu channel (connects on first use, from whichever thread)."""
        if self._channel is None:
            with self._channel_lock:
                if self._channel is None:
                    self._channel = self.connection.default_channel
        return self._channel

    @property
    def client(self) -> Any:
        return self.channel.client

    # --- this worker --------------------------------------------------------------------

    def start(self) -> None:
        """Take over from a previous process with this hostname; heartbeat from now on.

        Redis down now: the heartbeat thread retries (jobs received meanwhile are leased
        once it succeeds; only the previous process's tags are restored).
        """
        try:
            self._take_over()
        except Exception as exc:  # noqa: BLE001 - the worker must start anyway
            log.warning("held-jobs lease not taken yet (%s); retrying in the background", exc)
        self._thread.start()

    def _take_over(self) -> None:
        restored = self.restore_worker(self.hostname, check_alive=False)
        if restored:
            log.warning("restored %d job(s) held by this worker's previous process",
                        restored)
        self.renew()
        self._ready = True

    @property
    def held_key(self) -> str:
        return keys.held(self.hostname)

    def note(self, tag: str) -> bool:
        """Remember a tag this process holds; False if it was already known."""
        with self._lock:
            known = tag in self._tags
            self._tags.add(tag)
        return not known

    def record(self, tag: str) -> None:
        """Lease a received message (unless the transport already did)."""
        if self.note(tag):
            self.client.sadd(self.held_key, tag)

    def renew(self) -> None:
        ttl_ms = max(1, int(self.lease_s * 1000))
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.alive(self.hostname), f"{os.getpid()}", px=ttl_ms)
        pipe.sadd(keys.held_workers(), self.hostname)
        pipe.execute()
        self._prune()

    def stop(self) -> None:
        """Stop the heartbeat; the lease expires by itself (the held set says the rest)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self.connection.release()
        except Exception as exc:  # noqa: BLE001 - shutting down anyway
            log.debug("closing the redelivery connection: %s", exc)

    def _prune(self) -> None:
        """Forget tags that left `unacked` (acknowledged or restored)."""
        with self._lock:
            tags = list(self._tags)
        if not tags:
            return
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            pipe.hexists(self.channel.unacked_key, tag)
        gone = [tag for tag, held in zip(tags, pipe.execute(), strict=True) if not held]
        if gone:
            self.client.srem(keys.held(self.hostname), *gone)
            with self._lock:
                self._tags.difference_update(gone)

    def _run(self) -> None:
        while not self._stopped.wait(self.lease_s / 4):
            try:
                if not self._ready:
                    self._take_over()
                    continue
                self.renew()
                self.sweep()
            except Exception as exc:  # noqa: BLE001 - keep beating: Redis may come back
                log.warning("held-jobs heartbeat failed: %s", exc)

    # --- the janitor --------------------------------------------------------------------

    def sweep(self) -> int:
        """Restore the held messages of every worker whose lease expired."""
        others = [_text(w) for w in self.client.smembers(keys.held_workers())]
        others = [w for w in others if w != self.hostname]
        if not others:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for worker in others:
            pipe.exists(keys.alive(worker))
        dead = [w for w, alive in zip(others, pipe.execute(), strict=True) if not alive]
        restored = 0
        for worker in dead:
            count = self.restore_worker(worker, check_alive=True)
            if count:
                log.warning("worker %s stopped renewing its lease: %d of its job(s) "
                            "queued again", worker, count)
            restored += count
        return restored

    def restore_worker(self, worker: str, *, check_alive: bool) -> int:
        """Move a worker's held, still-unacknowledged messages back to their queues."""
        restored = 0
        with self._lock:
            mine = set(self._tags) if worker == self.hostname else set()
        for tag in [_text(t) for t in self.client.smembers(keys.held(worker))]:
            if tag in mine:
                continue  # received by this process: running here, not lost
            try:
                restored += self.restore_tag(worker, tag, check_alive=check_alive)
            except _LeaseBack:
                return restored
        for key in [_text(k) for k in self.client.scan_iter(keys.popping_pattern(worker))]:
            try:
                restored += self.restore_popping(worker, key, check_alive=check_alive)
            except _LeaseBack:
                return restored
        if check_alive:
            if self._forget is None:
                self._forget = self.client.register_script(FORGET_SCRIPT)
            self._forget(keys=[keys.alive(worker), keys.held(worker), keys.held_workers()],
                         args=[worker])
        return restored

    def restore_tag(self, worker: str, tag: str, *, check_alive: bool) -> int:
        """kombu's `QoS.restore_by_tag`, also watching the worker's lease (1 if restored)."""
        channel, alive_key = self.channel, keys.alive(worker)
        restored: list[int] = [0]

        def transaction(pipe: Any) -> None:
            if check_alive and pipe.exists(alive_key):
                raise _LeaseBack(worker)
            payload = pipe.hget(channel.unacked_key, tag)
            pipe.multi()
            pipe.zrem(channel.unacked_index_key, tag)
            pipe.hdel(channel.unacked_key, tag)
            pipe.srem(keys.held(worker), tag)
            restored[0] = 0
            if payload:
                message, exchange, routing_key = loads(_text(payload))  # type: ignore[no-untyped-call]
                channel._do_restore_message(message, exchange, routing_key, pipe, False)
                restored[0] = 1

        self.client.transaction(transaction, channel.unacked_key, alive_key)
        return restored[0]

    def restore_popping(self, worker: str, key: str, *, check_alive: bool) -> int:
        """Push back, verbatim, the entries a dead worker popped but never booked."""
        alive_key = keys.alive(worker)
        source = key[len(keys.popping(worker, "")):]
        restored: list[int] = [0]

        def transaction(pipe: Any) -> None:
            if check_alive and pipe.exists(alive_key):
                raise _LeaseBack(worker)
            entries = pipe.lrange(key, 0, -1)  # newest first: the oldest ends up consumed first
            pipe.multi()
            pipe.delete(key)
            if entries:
                pipe.rpush(source, *entries)
            restored[0] = len(entries)

        self.client.transaction(transaction, key, alive_key)
        return restored[0]


class HeldQoS(kombu_redis.QoS):
    """kombu's Redis QoS; booking a delivery also leases it, in the same MULTI.

    `append` is kombu 5.x's `QoS.append` (ZADD unacked_index, HSET unacked) plus the SADD
    into this worker's held set.
    """

    def append(self, message: Any, delivery_tag: str) -> None:
        current = _current
        if current is None:
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
            return
        delivery = message.delivery_info
        exchange, routing_key = delivery["exchange"], delivery["routing_key"]
        popping, self.channel._popping = getattr(self.channel, "_popping", None), None
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time()})
            pipe.hset(self.unacked_key, delivery_tag,
                      dumps([message._raw, exchange, routing_key]))  # type: ignore[no-untyped-call]
            pipe.sadd(current.held_key, delivery_tag)
            if popping is not None:  # booked now: no longer only in our `popping` list
                pipe.lrem(popping[0], 1, popping[1])
            pipe.execute()
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]
        current.note(delivery_tag)


class HeldChannel(DeadLetterChannel):
    """kombu's Redis channel with `HeldQoS`, dead-lettering malformed entries.

    kombu takes a message with BRPOP and books it in `unacked` in a later round trip: a
    worker SIGKILLed between the two had the message only in its memory, and it was lost
    for good (in nothing the janitor or kombu's visibility sweep can see; seen as a job
    that never started while the queue, `unacked` and every held set were empty). So with
    one consumed list (one queue, `priority_steps` [0], see `celery_config`) the worker
    takes entries with BLMOVE into `lmq:popping:<hostname>|<list>` instead, atomically, and
    `HeldQoS.append` removes the entry from there in its booking MULTI; the janitor pushes a
    dead worker's `popping` entries back on their list. Otherwise kombu's BRPOP.
    """

    QoS = HeldQoS
    _popping: tuple[str, bytes] | None = None  # (popping key, entry) being delivered
    _moving: tuple[str, str] | None = None  # (queue, popping key) of the BLMOVE sent

    def _brpop_start(self, timeout: Any = None) -> None:
        current = _current
        queues = list(self.active_queues)
        if (current is None or not current._ready or len(queues) != 1
                or list(self.priority_steps) != [0] or self.global_keyprefix):
            self._moving = None
            super()._brpop_start(timeout)  # type: ignore[no-untyped-call]
            return
        if timeout is None:
            timeout = self.brpop_timeout
        queue = queues[0]
        source = self._q_for_pri(queue, 0)  # type: ignore[no-untyped-call]
        self._moving = (queue, keys.popping(current.hostname, source))
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        self.client.connection.send_command("BLMOVE", source, self._moving[1], "RIGHT", "LEFT",
                                            timeout or 0)

    def _brpop_read(self, **options: Any) -> bool:
        moving = self._moving
        if moving is None:
            return super()._brpop_read(**options)
        self._moving = None
        queue, popping_key = moving
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not item:
                raise kombu_redis.Empty()  # type: ignore[attr-defined]
            self._popping = (popping_key, item)
            try:
                self._deliver_entry(item, queue)
            finally:
                if self._popping is not None:  # not booked (dead-lettered, rejected, ...)
                    self._popping = None
                    self.client.lrem(popping_key, 1, item)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.7 only
            if flush is not None:
                flush()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with `HeldQoS` (the worker's `broker_transport`)."""

    Channel = HeldChannel


TRANSPORT = "workers.redelivery:Transport"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_current: Redelivery | None = None


def start(app: Any, hostname: str, lease_s: float) -> Redelivery | None:
    """Start this worker's lease and janitor (None for brokers that requeue by themselves)."""
    global _current
    connection = app.connection_for_write()
    if connection.transport.driver_type != "redis":
        connection.release()
        log.info("broker %s requeues a lost worker's messages itself: no held-job leases",
                 connection.transport.driver_type)
        return None
    _current = Redelivery(connection, hostname, lease_s)
    _current.start()
    return _current


def use_held_transport(conf: Any = None, **_: Any) -> None:
    """`celeryd_init` handler: worker processes on a Redis broker use `Transport`.

    `rediss://` too: Celery turns the URL's `ssl_*` query (or `broker_use_ssl`) into the
    connection's ssl options, which kombu's channel honours whatever the transport class.
    kombu's one rediss-only default (no ssl options: `ssl_cert_reqs=CERT_NONE`, with a
    warning) is keyed on the transport name, so it is set here in that case.
    """
    url = str(conf.broker_url or "") if conf is not None else ""
    if not url.startswith(("redis://", "rediss://")) or conf.broker_transport:
        return
    if (url.startswith("rediss://") and not getattr(conf, "broker_use_ssl", None)
            and "ssl_cert_reqs" not in url):
        log.warning("rediss:// broker without ssl_cert_reqs: the certificate is not verified")
        conf.broker_use_ssl = {"ssl_cert_reqs": CERT_NONE}
    conf.broker_transport = TRANSPORT


def record(request: Any = None, **_: Any) -> None:
    """`task_received` handler: remember the delivery tag of a message this worker holds."""
    if _current is None or request is None:
        return
    try:
        _current.record(request.message.delivery_tag)
    except Exception as exc:  # noqa: BLE001 - kombu's visibility timeout is the backstop
        log.warning("could not record held job %s: %s", getattr(request, "id", "?"), exc)


def stop(**_: Any) -> None:
    global _current
    current, _current = _current, None
    if current is not None:
        current.stop()
