"""A killed worker's jobs go back on their queue within seconds (Redis broker only).

The problem. kombu's Redis transport emulates acknowledgements: a message delivered to a
worker stays in the `unacked` hash (payload, exchange, routing key) and the `unacked_index`
sorted set (delivery time) until the worker acknowledges it. If the worker is SIGKILLed,
nothing restores the message until it is older than the visibility timeout and a restore
sweep runs; the visibility timeout must exceed the longest job (4 h here). RabbitMQ needs
none of this: it requeues a dead consumer's unacknowledged messages when its connection
drops, so this module does nothing for `amqp://` brokers.

The fix. Every worker leases what it holds:

* **record** — worker processes on `redis://` and `rediss://` brokers use
  `workers.delivery.held_transport.Transport` (their `broker_transport`, set at `celeryd_init`). It
  takes each entry atomically off its broker list into `lmq:popping:<hostname>|<list>`
  (one queue or several), and its QoS, when it books a delivery into
  `unacked`/`unacked_index`, also adds the delivery tag to `lmq:held:<hostname>` and removes
  the entry from `popping`, in the same MULTI: no instant where a delivered message is
  unrecorded. When kombu gives one of this worker's messages back itself (a requeue, at
  shutdown), the tag leaves the held set in the same transaction: nothing for a janitor
  to restore a second time. Its channel also dead-letters malformed entries
  (`workers.delivery.dead_letter`).
  (`task_received` adds any tag the transport did not record, e.g. with another
  `broker_transport`: one SADD.)
* **lease** — a heartbeat thread sets `lmq:alive:<hostname>` with a TTL of
  `LMQ_HOLD_LEASE_S` every quarter of it (from start-up, before any job is received), adds
  the hostname to `lmq:held-workers`, and drops from its held set the tags that have left
  `unacked` otherwise than through this process (an ack, a reject or a restore of its own
  takes the tag out of the held set in the same pipe, and out of the heartbeat's list);
* **janitor** — on every beat, for every worker in `lmq:held-workers` whose lease key is
  gone, its `popping` entries are pushed back verbatim, and each tag still in its held set
  and in `unacked` is moved back to its queue as kombu's `QoS.restore_by_tag` does it
  (kombu's own `Channel._do_restore_message` sets the `redelivered` flag, resolves the
  exchange and routing key through kombu's binding table, and honours priority lists; the
  held transport's puts a job with a tenant on that tenant's list and registers its turn,
  `workers.delivery.tenant_turns`; the payload goes to the consuming end, like kombu's
  visibility-timeout restore). The same transaction drops the tag from its tenant's
  running count (LMQ_TENANT_MAX_RUNNING), and a `popping` entry goes back to its tenant's
  list with its count dropped too: a killed worker never keeps a tenant at its cap. Each restore
  is one WATCH transaction over what it reads (`unacked`, the worker's held set or `popping`
  list, its lease key): it gives up if the lease reappears, and it happens once even when
  janitors race. A tag is restored only while the dead worker's held set still has it:
  checking `unacked` alone let a janitor that listed the tags before another janitor
  restored one find it in `unacked` again once a live worker had taken the message back
  (same delivery tag), and queue it a second time while it ran;
* **restart** — a worker starting with a hostname that holds tags restores them first
  (its previous process is dead: live workers have unique hostnames), before it consumes.

With a broker `global_keyprefix` (a transport option), all of these keys carry it, like
kombu's own.

So a killed worker's jobs are queued again `LMQ_HOLD_LEASE_S` (+ one beat) after its last
heartbeat by any live worker of the pool, or when it restarts. Delivery stays
at-least-once: a redelivered job that already finished returns its stored result
(`workers.delivery.result_store`); a worker paused (SIGSTOP) past its lease may see its job run
elsewhere too. kombu's own visibility-timeout sweep (`celery_config`) stays as the backstop
for tags no worker holds (booked before the worker's lease was up, or by a worker on
another broker transport); it skips held tags (`HeldQoS.restore_visible`), which are this
module's to restore.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import redis
from kombu.utils.json import loads

from workers import keys
from workers.celery_config import (
    CLIENT_TRANSPORT,
    PRIORITY_SEP,
    bare_rediss_ssl,
    message_tenant,
)
from workers.delivery import tenant_turns

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


class _Pushes:
    """Stands in for the pipe kombu's `Channel._do_restore_message` pushes a message onto.

    kombu resolves the message's lists (binding table, priority) and marks it redelivered;
    the held transport picks the tenant's list and registers the tenant's turn
    (`workers.delivery.tenant_turns.push`); the janitor makes these commands itself, with
    the key prefix, in its own transaction.
    """

    def __init__(self) -> None:
        self.made: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = []

    def rpush(self, key: str, *values: bytes | str) -> None:
        self.made.append(("rpush", key, values, {}))

    def lpush(self, key: str, *values: bytes | str) -> None:
        self.made.append(("lpush", key, values, {}))

    def zadd(self, key: str, mapping: dict[str, float], **options: Any) -> None:
        self.made.append(("zadd", key, (mapping,), options))

    def replay(self, pipe: Any, key_prefix: str) -> None:
        for command, key, args, options in self.made:
            getattr(pipe, command)(key_prefix + key, *args, **options)


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
        self._client: redis.Redis | None = None
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
    def client(self) -> redis.Redis:
        """A plain client on the channel's pool: every key named here carries the prefix.

        (kombu's prefixing client prefixes only the commands it uses itself: EXISTS,
        SISMEMBER, LRANGE... would reach unprefixed keys.)
        """
        if self._client is None:
            self._client = redis.Redis(connection_pool=self.channel.pool)
        return self._client

    def key(self, name: str) -> str:
        """`name` with the broker's `global_keyprefix` (kombu prefixes its keys with it)."""
        return f"{self.channel.global_keyprefix}{name}"

    @property
    def ready(self) -> bool:
        """Leased: the transport may take entries into this worker's `popping` lists."""
        return self._ready

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
        """This worker's held set, unprefixed: kombu's pipe prefixes SADD itself."""
        return keys.held(self.hostname)

    def note(self, tag: str) -> bool:
        """Remember a tag this process holds; False if it was already known."""
        with self._lock:
            known = tag in self._tags
            self._tags.add(tag)
        return not known

    def forget(self, tag: str) -> None:
        """`tag` left `unacked` and this worker's held set (acknowledged, rejected or
        restored by this process, `HeldQoS`): nothing for the heartbeat to check."""
        with self._lock:
            self._tags.discard(tag)

    def record(self, tag: str) -> None:
        """Lease a received message (unless the transport already did)."""
        if self.note(tag):
            self.client.sadd(self.key(self.held_key), tag)

    def renew(self) -> None:
        ttl_ms = max(1, int(self.lease_s * 1000))
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.key(keys.alive(self.hostname)), f"{os.getpid()}", px=ttl_ms)
        pipe.sadd(self.key(keys.held_workers()), self.hostname)
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
        """Forget tags that left `unacked` by another way than this process's ack, reject
        or restore (which forget theirs at once): the tags of running jobs are checked."""
        with self._lock:
            tags = list(self._tags)
        if not tags:
            return
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            pipe.hexists(self.key(self.channel.unacked_key), tag)
        gone = [tag for tag, held in zip(tags, pipe.execute(), strict=True) if not held]
        if gone:
            self.client.srem(self.key(self.held_key), *gone)
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
        others = [_text(w) for w in self.client.smembers(self.key(keys.held_workers()))]
        others = [w for w in others if w != self.hostname]
        if not others:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for worker in others:
            pipe.exists(self.key(keys.alive(worker)))
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
        for tag in [_text(t) for t in self.client.smembers(self.key(keys.held(worker)))]:
            if tag in mine:
                continue  # received by this process: running here, not lost
            try:
                restored += self.restore_tag(worker, tag, check_alive=check_alive)
            except _LeaseBack:
                return restored
        pattern = keys.popping_pattern(worker, self.key(""))
        for key in [_text(k) for k in self.client.scan_iter(pattern)]:
            try:
                restored += self.restore_popping(worker, key, check_alive=check_alive)
            except _LeaseBack:
                return restored
        if check_alive:
            self._forget_if_done(worker)
        return restored

    def _forget_if_done(self, worker: str) -> None:
        if self._forget is None:
            self._forget = self.client.register_script(FORGET_SCRIPT)
        self._forget(keys=[self.key(keys.alive(worker)), self.key(keys.held(worker)),
                           self.key(keys.held_workers())], args=[worker])

    def held_by_any_worker(self, tags: list[str]) -> set[str]:
        """Those of `tags` in some worker's held set (live or not: the janitor owns them)."""
        workers = [_text(w) for w in self.client.smembers(self.key(keys.held_workers()))]
        if not tags or not workers:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for worker in workers:
            pipe.smismember(self.key(keys.held(worker)), tags)
        held: set[str] = set()
        for flags in pipe.execute():
            held.update(tag for tag, flag in zip(tags, flags, strict=True) if flag)
        return held

    def restore_tag(self, worker: str, tag: str, *, check_alive: bool) -> int:
        """kombu's `QoS.restore_by_tag`, if `worker` still holds `tag` (1 if restored).

        One WATCH transaction over `unacked`, the worker's held set and its lease: it
        restores the tag at most once. Checking the held set, not only `unacked`, matters:
        a janitor that listed the tag before another one restored it would otherwise find
        it in `unacked` again once a live worker has taken the message back (same delivery
        tag), and queue it a second time while it runs.
        """
        held_key, alive_key = self.key(keys.held(worker)), self.key(keys.alive(worker))
        unacked_key = self.key(self.channel.unacked_key)
        index_key = self.key(self.channel.unacked_index_key)
        restored: list[int] = [0]

        def transaction(pipe: Any) -> None:
            restored[0] = 0
            if check_alive and pipe.exists(alive_key):
                raise _LeaseBack(worker)
            if not pipe.sismember(held_key, tag):
                return  # restored by another janitor (or acknowledged, then pruned)
            payload = pipe.hget(unacked_key, tag)
            message, pushes = self._pushes(payload) if payload else (None, _Pushes())
            pipe.multi()
            pipe.zrem(index_key, tag)
            pipe.hdel(unacked_key, tag)
            pipe.srem(held_key, tag)
            if message is not None:  # its tenant's running count (LMQ_TENANT_MAX_RUNNING)
                tenant_turns.release(pipe, message_tenant(message), tag, self.key(""))
            pushes.replay(pipe, self.key(""))
            restored[0] = 1 if pushes.made else 0

        self.client.transaction(transaction, unacked_key, held_key, alive_key)
        return restored[0]

    def _pushes(self, payload: bytes) -> tuple[dict[str, Any], _Pushes]:
        """The message of an `unacked` payload, and the (unprefixed) pushes that put it back."""
        message, exchange, routing_key = loads(_text(payload))  # type: ignore[no-untyped-call]
        pushes = _Pushes()
        self.channel._do_restore_message(message, exchange, routing_key, pushes, False)
        return message, pushes

    def restore_popping(self, worker: str, key: str, *, check_alive: bool) -> int:
        """Push back, verbatim, the entries a dead worker took but never booked, each onto
        its tenant's list of the priority list it came from (and out of the tenant's
        running count)."""
        alive_key = self.key(keys.alive(worker))
        name = key[len(self.key(keys.popping(worker, ""))):]  # its priority list
        source, queue = self.key(name), name.split(PRIORITY_SEP)[0]
        restored: list[int] = [0]

        def transaction(pipe: Any) -> None:
            if check_alive and pipe.exists(alive_key):
                raise _LeaseBack(worker)
            entries = pipe.lrange(key, 0, -1)  # newest first: the oldest ends up consumed first
            pipe.multi()
            pipe.delete(key)
            for entry in entries:
                tag, tenant = tenant_turns.entry_tag_tenant(entry)
                tenant_turns.push(pipe, source, tenant, entry, key_prefix=self.key(""))
                if tag:
                    tenant_turns.release(pipe, tenant, tag, self.key(""))
            if entries:
                tenant_turns.ring(pipe, queue, len(entries), self.key(""))
            restored[0] = len(entries)

        self.client.transaction(transaction, key, alive_key)
        return restored[0]


TRANSPORT = "workers.delivery.held_transport:Transport"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_current: Redelivery | None = None


def current() -> Redelivery | None:
    """This worker process's lease and janitor, once started (None elsewhere)."""
    return _current


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
    """`celeryd_init` handler: worker processes on a Redis broker use `Transport` (in place
    of `CLIENT_TRANSPORT`, every other process's).

    `rediss://` too: Celery turns the URL's `ssl_*` query (or `broker_use_ssl`) into the
    connection's ssl options, which kombu's channel honours whatever the transport class.
    kombu's one rediss-only default (no ssl options: `ssl_cert_reqs=CERT_NONE`, with a
    warning) is keyed on the transport name, so it is set here in that case.
    """
    url = str(conf.broker_url or "") if conf is not None else ""
    if (not url.startswith(("redis://", "rediss://"))
            or conf.broker_transport not in (None, "", CLIENT_TRANSPORT)):
        return
    ssl = None if getattr(conf, "broker_use_ssl", None) else bare_rediss_ssl(url)
    if ssl:
        conf.broker_use_ssl = ssl
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
