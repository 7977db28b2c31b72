"""The worker's broker transport: kombu's Redis transport that never has a message unrecorded.

kombu takes a message with BRPOP and books it in `unacked` in a later round trip: a worker
SIGKILLed between the two had the message only in its memory, and it was lost for good (in
nothing the janitor or kombu's visibility sweep can see; seen as a job that never started
while the queue, `unacked` and every held set were empty). So, once the worker's lease is
up (`workers.delivery.redelivery`), `HeldChannel` takes each entry off its broker list and
books it in `unacked` and in the worker's held set in one script (`tenant_turns.TAKE_SCRIPT`):
`HeldQoS.append` then has nothing left to write. An entry the script cannot read goes into
`lmq:popping:<hostname>|<list>` instead, and `HeldQoS.append` removes it from there in the
MULTI that books it (or it is dead-lettered). The janitor puts a dead worker's held tags and
`popping` entries back on their lists.

How an entry is taken, without a busy loop:

* the lists (one per job priority, `workers.celery_config.REDIS_PRIORITY_STEP`, and per
  queue, each with one list per tenant): `tenant_turns.TAKE_SCRIPT` moves the oldest
  entry of the most urgent priority list (high, normal, low; one whose oldest entry waited
  past LMQ_PRIORITY_AGING_S counts one level higher), from the tenant whose turn it is
  there: the least recent usage, then turns (`workers.delivery.tenant_turns`);
* nothing to take (or every waiting job's tenant at LMQ_TENANT_MAX_RUNNING): the script
  drops the tokens left on the queues' bells (`workers.keys.bell`), and the worker BLPOPs
  on them for at most `MULTI_LIST_WAIT_S`, then runs the script again. Producers push a
  bell token with the jobs they queue (`producers.publisher.ring`),
  and so do the worker's and the janitor's restores and re-publishes (`tenant_turns.ring`),
  so a job is taken as soon as it arrives, whatever its priority or tenant list; one
  queued without a token (a plain kombu publish such as `send_task` from another app, a
  capped tenant's slot freed) waits, when the worker is idle, up to that wait plus Redis's
  timer resolution (1/hz, 0.1 s by default): measured <= 0.16 s, about six script calls
  a second. (Redis cannot block on several lists without popping, and blocking on a job
  list would take past the script's turns and cap.) Priorities and turns are thus
  decided in Redis, in the one atomic take: no job is taken out and put back to reorder
  them.

A take whose reply is lost (the connection drops just after Redis took the entry) leaves
it booked under this live worker (or in its `popping` list), where the janitor would not
look until the worker dies. So a connection error during a take or a delivery marks the
worker's takes as possibly stranded, and the next take, on the new connection, first puts
back what this worker holds but never received: the tags of its held set it does not know
and its `popping` entries (`Redelivery.restore_worker`). That is safe: such a job is not
running anywhere, and no take of this process is in flight at that moment.

With a `global_keyprefix` every key sent here carries it (kombu's prefixing client leaves
the commands it does not know, such as LREM, unprefixed; SADD it prefixes itself).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from time import monotonic, time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import NoScriptError

from workers import keys
from workers.celery_config import (
    ENQUEUED_AT_HEADER,
    PRIORITIES,
    REDIS_PRIORITY_STEP,
    TENANT_SEP,
    message_tenant,
)
from workers.delivery import finish_ack, redelivery, tenant_turns
from workers.delivery.dead_letter import DeadLetterChannel
from workers.delivery.tenant_purge import TenantPurgeChannel

log = logging.getLogger(__name__)

# Tags past the visibility timeout read per sweep (kombu reads 10, but held tags are
# skipped here and must not hide the unheld ones behind them).
SWEEP_MAX_TAGS = 1000

# How long an idle worker blocks on its bells before it runs the take script again: the
# extra latency, when idle, of a job queued without a bell token (none on a busy queue).
MULTI_LIST_WAIT_S = 0.1

# The take script is sent by its SHA1 (EVALSHA): 80 bytes instead of its 2.5 KB body per
# take, and Redis does not hash the body again. A Redis that does not know it (restarted,
# SCRIPT FLUSH) answers NOSCRIPT without running anything; the take is then sent once as
# EVAL, which also caches the script.
TAKE_SHA = hashlib.sha1(tenant_turns.TAKE_SCRIPT.encode()).hexdigest()

# Set when a take or a delivery was cut by a connection error: what it took is put back
# before the next take. Module-level because kombu replaces the channel after such an error.
_stranded = threading.Event()


@dataclass(frozen=True)
class Source:
    """A broker list to take from: its queue, and the full (prefixed) keys involved."""

    queue: str
    list_key: str
    popping_key: str
    level: int = 0  # priority level: 0 high, 1 normal, 2 low (PRIORITIES)
    turns_key: str = ""  # the tenants waiting on list_key (`workers.keys.tenant_turns`)


@dataclass(frozen=True)
class Take:
    """The command in flight on the consuming connection: "EVAL" (the take script, sent as
    EVALSHA) or "BLPOP"."""

    command: str
    sources: list[Source]


class HeldQoS(kombu_redis.QoS):
    """kombu's Redis QoS; booking a delivery also leases it, in the same MULTI.

    `append` is kombu 5.x's `QoS.append` (ZADD unacked_index, HSET unacked) plus the SADD
    into this worker's held set (prefixed by kombu's pipe) and the LREM of the entry from
    the `popping` list it was taken into (its key already prefixed), or nothing but the
    local bookkeeping for an entry the take script booked. Whatever takes the tag out of
    `unacked` (an ack, a reject, a restore) takes it out of the held set in the same pipe
    (`_remove_from_indices`), and this process forgets it (`Redelivery.forget`): the
    heartbeat then has only the running jobs' tags to check.
    """

    def append(self, message: Any, delivery_tag: str) -> None:
        current = redelivery.current()
        if current is None:
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
            return
        booked, self.channel._booked = getattr(self.channel, "_booked", False), False
        if booked:  # the take booked it already (`tenant_turns.TAKE_SCRIPT`)
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]
            current.note(delivery_tag)
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

    def ack(self, delivery_tag: str) -> None:
        """kombu's ack; only its local part for a job acknowledged with its result
        (`workers.delivery.finish_ack`)."""
        if finish_ack.acked(delivery_tag):
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
        else:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        _forget(delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        """kombu's sweep of `unacked` past the visibility timeout, without the tags workers
        hold.

        A held tag is leased (`workers.delivery.redelivery`): it runs on a live worker, or the
        janitor puts it back once that worker's lease ends. kombu's sweep knows nothing of
        leases: it queued a job running longer than the visibility timeout again at every sweep (a
        130 s job with a 2 s timeout ran at least three times). Only tags booked without a lease
        (kombu's path, before this worker's lease was up) are kombu's to restore.
        """
        current = redelivery.current()
        if current is None:
            super().restore_visible(start, num, interval)  # type: ignore[no-untyped-call]
            return
        self._vrestore_count += 1
        if (self._vrestore_count - 1) % (interval or 1):
            return  # kombu's throttle: one sweep per `interval` calls
        with self.channel.conn_or_acquire() as client:
            try:
                with kombu_redis.Mutex(client, self.unacked_mutex_key,
                                       self.unacked_mutex_expire):
                    ceil = time() - self.visibility_timeout
                    visible = [bytes_to_str(tag) for tag, _ in client.zrange(
                        self.unacked_index_key, ceil, 0, desc=True, byscore=True,
                        offset=start, num=SWEEP_MAX_TAGS, withscores=True)]
                    held = current.held_by_any_worker(visible)
                    for tag in visible:
                        if tag not in held:
                            self.restore_by_tag(tag, client)
            except kombu_redis.MutexHeld:
                pass  # another worker is sweeping

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        """kombu's removal of a tag from `unacked` (on ack, reject and restore), also from
        its tenant's running set (`workers.delivery.tenant_turns`) and from this worker's
        held set, in the same pipe."""
        pipe = super()._remove_from_indices(delivery_tag, pipe)  # type: ignore[no-untyped-call]
        message = self._delivered.get(delivery_tag)
        tenant = tenant_turns.headers_tenant(getattr(message, "headers", None))
        tenant_turns.release(pipe, tenant, delivery_tag)
        current = redelivery.current()
        if current is not None:
            pipe.srem(current.held_key, delivery_tag)
        return pipe

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        """kombu 5.x's `QoS.restore_by_tag`, also dropping the tag from this worker's held set.

        kombu restores this worker's own messages on a requeue (`Reject(requeue=True)`, an
        LM Studio outage) and at shutdown. Left in the held set, the tag would be restored
        once more when this worker's lease ends, even though another worker had taken the
        message back meanwhile (same delivery tag) and was running it.
        """
        current = redelivery.current()
        if current is None:
            super().restore_by_tag(tag, client, leftmost)  # type: ignore[no-untyped-call]
            return

        def restore(pipe: Any) -> None:
            payload = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            self._remove_from_indices(tag, pipe)  # out of the held set too
            if payload:
                message, exchange, routing_key = loads(bytes_to_str(payload))  # type: ignore[no-untyped-call]
                tenant_turns.release(pipe, message_tenant(message), tag)
                self.channel._do_restore_message(message, exchange, routing_key, pipe, leftmost)

        with self.channel.conn_or_acquire(client) as conn:
            conn.transaction(restore, self.unacked_key)
        current.forget(tag)


class HeldChannel(DeadLetterChannel, TenantPurgeChannel):
    """kombu's Redis channel taking entries atomically into `popping` (module docstring);
    a purge also deletes the tenant lists (`workers.delivery.tenant_purge`).

    Until the worker's lease is up (Redis down at start-up), kombu's BRPOP.
    """

    QoS = HeldQoS
    _popping: tuple[str, bytes] | None = None  # (popping key, entry) being delivered
    _booked = False  # the entry being delivered was booked by the take script
    _take: Take | None = None  # our command in flight (None: kombu's BRPOP, or nothing)
    _shared_client: Any = None  # see conn_or_acquire

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """kombu builds a new `redis.Redis` for every command sent without a client (each
        task event, ack, restore): 6% of a worker's CPU at the stress timing (py-spy,
        issue 22). One per channel instead, on the same connection pool: a Redis client is
        thread-safe, each command still takes a connection from the pool. Rebuilt when
        kombu replaced the pool (after a connection error)."""
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()  # type: ignore[no-untyped-call]
        yield shared

    def _brpop_start(self, timeout: Any = None) -> None:
        current = redelivery.current()
        if current is None or not current.ready:
            self._take = None
            super()._brpop_start(timeout)  # type: ignore[no-untyped-call]
            return
        _restore_stranded(current)
        sources = self._sources(current.hostname)
        if sources:  # even one list: its tenants' lists are taken by turns
            self._send_take(sources)

    def _sources(self, hostname: str) -> list[Source]:
        """The lists to take from: by job priority (high, normal, low), then queue cycle."""
        queues = self._queue_cycle.consume(len(self.active_queues))
        lists = [(queue, self._q_for_pri(queue, step), level)  # type: ignore[no-untyped-call]
                 for level, step in _levels(self.priority_steps) for queue in queues]
        prefix = self.global_keyprefix
        return [Source(queue, prefix + name, prefix + keys.popping(hostname, name), level,
                       prefix + keys.tenant_turns(name))
                for queue, name, level in lists]

    def _send_take(self, sources: list[Source], by_sha: bool = True) -> None:
        prefix = self.global_keyprefix
        keys_ = ([s.list_key for s in sources] + [s.popping_key for s in sources]
                 + [s.turns_key for s in sources] + [prefix + keys.turn_counter()])
        aging_s, cap = _settings()
        cutoff = time() - aging_s if aging_s > 0 else 0
        script = ("EVALSHA", TAKE_SHA) if by_sha else ("EVAL", tenant_turns.TAKE_SCRIPT)
        current = redelivery.current()
        assert current is not None  # takes are ours only once the lease is up
        self._send(Take("EVAL", sources), *script, len(keys_), *keys_,
                   repr(cutoff), cap or 0, prefix + keys.tenant_running(None), TENANT_SEP,
                   *(s.level for s in sources), prefix + self.unacked_key,
                   prefix + self.unacked_index_key, prefix + current.held_key, repr(time()),
                   *self._bells(sources))

    def _send_wait(self, sources: list[Source]) -> None:
        """Block on the bells of the sources' queues (a popped token is only a wake-up)."""
        self._send(Take("BLPOP", sources), "BLPOP", *self._bells(sources), MULTI_LIST_WAIT_S)

    def _bells(self, sources: list[Source]) -> list[str]:
        return sorted({self.global_keyprefix + keys.bell(s.queue) for s in sources})

    def _send(self, take: Take, *command: Any) -> None:
        self._take = take
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        take, self._take = self._take, None
        if take is None:
            return super()._brpop_read(**options)
        unknown_script = False
        try:
            taken = self._read_taken(take, **options)
            if taken is not None and taken[0] >= 0:
                index, entry, booked = taken
                source = take.sources[index]
                self._queue_cycle.rotate(source.queue)
                self._deliver_taken(source, entry, booked)
                return True
        except NoScriptError:  # nothing ran: take again below, with the script's body
            unknown_script = True
        except self.connection_errors:
            _stranded.set()
            raise
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.7 only
            if flush is not None:
                flush()
        if unknown_script:
            self._send_take(take.sources, by_sha=False)
        elif take.command == "EVAL":  # nothing to take (or all capped): wait for a bell
            self._send_wait(take.sources)
        raise kombu_redis.Empty()  # type: ignore[attr-defined]

    def _read_taken(self, take: Take, **options: Any) -> tuple[int, bytes, bool] | None:
        """(index of the source, entry, booked by the script) from the reply; None if
        nothing waits (or a bell rang: nothing taken yet); (-1, b"", False) if jobs wait
        but their tenants are at their running cap."""
        try:
            reply = self.client.parse_response(self.client.connection, take.command, **options)
        except self.connection_errors:
            self.client.connection.disconnect()
            raise
        if not reply or take.command == "BLPOP":
            return None
        if int(reply[0]) < 0:
            return -1, b"", False
        return int(reply[0]), reply[1], int(reply[2]) == 1

    def _deliver_taken(self, source: Source, entry: bytes, booked: bool) -> None:
        if booked:
            self._booked = True
        else:
            self._popping = (source.popping_key, entry)
        try:
            self._deliver_entry(entry, source.queue)
        finally:
            if self._booked:  # booked, then not delivered (dead-lettered, ...)
                self._booked = False
                self._unbook(entry)
            if self._popping is not None:  # not booked (dead-lettered, rejected, ...)
                self._popping = None
                tag, tenant = tenant_turns.entry_tag_tenant(entry)
                with self.client.pipeline() as pipe:
                    pipe.lrem(source.popping_key, 1, entry)
                    if tag:
                        tenant_turns.release(pipe, tenant, tag)
                    pipe.execute()

    def _unbook(self, entry: bytes) -> None:
        """Undo the take script's booking of an entry that was not delivered: the writes
        of an ack (`finish_ack.BrokerAck`), and the tag out of the held set."""
        current = redelivery.current()
        tag, tenant = tenant_turns.entry_tag_tenant(entry)
        if current is None or tag is None:
            return
        pipe = current.client.pipeline()  # a plain client: full key names
        finish_ack.BrokerAck(tag, tenant, current.key(""), self.unacked_key,
                             self.unacked_index_key, current.key(current.held_key)).write(pipe)
        pipe.execute()
        current.forget(tag)

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's publish, onto the tenant's list for a message with a tenant (a job the
        worker publishes again); kombu's own otherwise. (Queue expiry, `x-expires`, is not
        used for job queues.)"""
        tenant = message_tenant(message)
        headers = message.get("headers")
        job = isinstance(headers, dict) and ENQUEUED_AT_HEADER in headers
        if not tenant:
            super()._put(queue, message, **kwargs)  # type: ignore[no-untyped-call]
            if job:  # not for other messages (control replies): nobody waits on their bell
                with self.conn_or_acquire() as client:
                    tenant_turns.ring(client, queue)
            return
        name = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))  # type: ignore[no-untyped-call]
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            tenant_turns.push(pipe, name, tenant, dumps(message), leftmost=True)  # type: ignore[no-untyped-call]
            tenant_turns.ring(pipe, queue)
            pipe.execute()

    def _do_restore_message(self, payload: Any, exchange: str, routing_key: str, pipe: Any,
                            leftmost: bool = False) -> None:
        """kombu 5.x's restore of an unacknowledged message (flagged redelivered, onto the
        end taken next of its priority list), onto its tenant's list if it has one; the
        queue's bell rings in the same pipe (`tenant_turns.ring`)."""
        tenant = message_tenant(payload)
        if not tenant:
            super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)  # type: ignore[no-untyped-call]
            try:
                queues = self._lookup(exchange, routing_key)  # type: ignore[no-untyped-call]
            except Exception:  # noqa: BLE001 - kombu's restore above logged it (not restored)
                return
            for queue in queues:
                tenant_turns.ring(pipe, queue)
            return
        payload["headers"]["redelivered"] = True
        payload.get("properties", {}).get("delivery_info", {})["redelivered"] = True
        priority = self._get_message_priority(payload, reverse=False)  # type: ignore[no-untyped-call]
        for queue in self._lookup(exchange, routing_key):  # type: ignore[no-untyped-call]
            tenant_turns.push(pipe, self._q_for_pri(queue, priority), tenant,  # type: ignore[no-untyped-call]
                              dumps(payload), leftmost=leftmost)  # type: ignore[no-untyped-call]
            tenant_turns.ring(pipe, queue)


def _levels(steps: list[int]) -> list[tuple[int, int]]:
    """(level, kombu priority step) in the order to take: PRIORITIES first, other steps
    (a transport configured otherwise) after them."""
    ordered = [REDIS_PRIORITY_STEP[p] for p in PRIORITIES if REDIS_PRIORITY_STEP[p] in steps]
    ordered += [step for step in steps if step not in ordered]
    return [(min(level, len(PRIORITIES) - 1), step) for level, step in enumerate(ordered)]


_settings_read: list[tuple[float, int | None]] = []


def _settings() -> tuple[float, int | None]:
    """(LMQ_PRIORITY_AGING_S, LMQ_TENANT_MAX_RUNNING), read once per process."""
    if not _settings_read:
        from workers.settings import get_settings

        settings = get_settings()
        _settings_read.append((settings.priority_aging_s, settings.tenant_max_running))
    return _settings_read[0]


def _restore_stranded(current: redelivery.Redelivery) -> None:
    """Put back what takes cut by a connection error left behind: the tags booked under
    this worker that it never received, and its `popping` entries.

    The mark is cleared only once that is done: if Redis is still down this raises, kombu
    reconnects, and the next take tries again.
    """
    if not _stranded.is_set():
        return
    restored = current.restore_worker(current.hostname, check_alive=False)
    _stranded.clear()
    if restored:
        log.warning("%d job(s) taken when the broker connection dropped were queued again",
                    restored)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with `HeldChannel` (the worker's `broker_transport`)."""

    Channel = HeldChannel


def _forget(tag: str) -> None:
    """This process no longer holds `tag` (`Redelivery.forget`), if it leases at all."""
    current = redelivery.current()
    if current is not None:
        current.forget(tag)
