"""Fair shares between tenants (issue 20 item 2): at equal priority, the tenant with the least
recent usage takes next in the broker, then tenants take turns; an optional cap on each
tenant's running jobs.

Real worker processes, real Redis, the SDK against the simulator. As in test_priority: with
one job at a time (LMQ_CONCURRENCY=1) a slow first job keeps the worker busy while the
others queue up; the order they then start in (their results' `timing.started_at`) is the
order the worker took them off the broker lists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from producers import JobQueue
from producers.job_handle import JobHandle
from tests.integration.test_priority import FAST, _busy, _start_order, _waiting
from tests.integration.test_worker_support import EMBED, LLM, predict_channels
from tests.support.wait import wait_until
from workers import keys
from workers.celery_config import REDIS_PRIORITY_STEP, priority_list, tenant_list
from workers.contract import ChatResult, queue_name
from workers.metrics import model_snapshot, queue_length, queue_lengths
from workers.settings import Settings

pytestmark = [pytest.mark.timeout(240)]

# A long job's token limit: above the simulator's reply (900 tokens, 30 s), far below the
# context, so the admission gate lets other jobs run beside it.
LONG = {"maxTokens": 1000}


@pytest.fixture()
def queue(redis_url: str) -> Iterator[JobQueue]:
    with JobQueue(Settings(broker_url=redis_url, result_backend=redis_url)) as started:
        yield started


def _submit(queue: JobQueue, tenant: str, count: int, priority: str = "normal",
            name: str | None = None, config: dict[str, int] = FAST) -> dict[str, JobHandle]:
    """`count` jobs of `tenant` in one submission, named <name or tenant><n> (quick ones:
    two tokens; LONG: as long as the simulator's reply)."""
    jobs = [{"model": LLM, "messages": f"{tenant} job {n}", "config": config}
            for n in range(count)]
    handles = queue.submit_many(jobs, tenant=tenant, priority=priority, enqueue_anyway=True)
    return {f"{name or tenant}{n}": handle for n, handle in enumerate(handles)}


def _list(tenant: str | None, priority: str = "normal") -> str:
    return tenant_list(priority_list(queue_name(LLM), REDIS_PRIORITY_STEP[priority]), tenant)


def _wait_released(broker: redis.Redis, *tenants: str) -> None:
    """Until no job of these tenants counts as running. A job's result is stored before its
    message is acknowledged (and its tag released, `HeldQoS._remove_from_indices`) on the
    worker's event loop: right after the result, the tag may still be there. A leaked tag
    stays: this then fails."""
    for tenant in tenants:
        wait_until(lambda t=tenant: broker.scard(keys.tenant_running(t)) == 0, timeout=10,
                   message=f"{tenant}'s running count back to 0")


def _max_overlap(results: list[ChatResult]) -> int:
    """The most of these jobs that ran at the same moment (from their start/finish times)."""
    edges = sorted([(r.timing.started_at, 1) for r in results]
                   + [(r.timing.finished_at, -1) for r in results])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_a_small_tenant_takes_turns_with_a_big_backlog(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    worker_factory(LLM, {**lmq_env, "LMQ_CONCURRENCY": "1"})
    blocker = _busy(simulator, queue, 4)
    handles = {**_submit(queue, "big", 6), **_submit(queue, "small", 3)}
    _waiting(redis_url, 9)
    broker = redis.Redis.from_url(redis_url)
    assert broker.llen(_list("big")) == 6 and broker.llen(_list("small")) == 3
    assert queue_lengths(broker, LLM) == {"high": 0, "normal": 9, "low": 0}
    assert model_snapshot(broker, LLM)["tenants_waiting"] == 2
    # Ahead of small2: its own two, and three of big's turns (big's turn comes first).
    assert handles["small2"].position().ahead == 5  # type: ignore[union-attr]
    assert handles["big5"].position().ahead == 5 + 3  # type: ignore[union-attr]
    assert blocker.status() in ("STARTED", "PROGRESS")  # all nine queued behind it
    simulator.admin.clear_faults()
    queue.cancel(blocker.id)
    assert _start_order(handles) == ["big0", "small0", "big1", "small1", "big2", "small2",
                                     "big3", "big4", "big5"]
    assert queue_length(broker, LLM) == 0


def test_a_tenant_with_less_recent_usage_takes_next(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    """Fair share, not exact turns: `big` runs a long job on worker a; on worker b, `small`
    (no recent take, none running) takes before `big`, though big's jobs are older and
    neither has had a turn on their list (exact turns: big0, small0, big1, small1). Then
    small1 still starts before big1: big has taken one job more."""
    env = {**lmq_env, "LMQ_CONCURRENCY": "1"}
    worker_factory(LLM, env)
    simulator.admin.set_timing(decode_tokens_per_s=30)
    simulator.admin.set_faults(reply_tokens=900)  # 30 s: long jobs run through the test
    long = queue.chat(LLM, "big's long job", config=LONG, tenant="big", enqueue_anyway=True)
    wait_until(lambda: any(c["fragments"] >= 2 for c in predict_channels(simulator)),
               timeout=60, message="big's long job generating on worker a")
    worker_factory(LLM, env)
    blocker = queue.chat(LLM, "keep worker b busy", config=LONG, tenant="other",
                         enqueue_anyway=True)
    wait_until(lambda: blocker.status() in ("STARTED", "PROGRESS"), timeout=60,
               message="the blocker running on worker b")
    handles = {**_submit(queue, "big", 2), **_submit(queue, "small", 2)}
    _waiting(redis_url, 4)
    broker = redis.Redis.from_url(redis_url)
    assert broker.scard(keys.tenant_running("big")) == 1  # counted without a cap too
    queue.cancel(blocker.id)
    order = _start_order(handles)
    assert order[0] == "small0" and order.index("small1") < order.index("big1"), order
    queue.cancel(long.id)
    _wait_released(broker, "big", "small", "other")


def test_priority_wins_over_turns(worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    worker_factory(LLM, {**lmq_env, "LMQ_CONCURRENCY": "1"})
    blocker = _busy(simulator, queue, 4)
    handles = {**_submit(queue, "big", 3, name="big-normal"), **_submit(queue, "small", 2),
               **_submit(queue, "big", 2, "high", name="big-high"),
               **_submit(queue, "small", 1, "low", name="small-low")}
    _waiting(redis_url, 8)
    simulator.admin.clear_faults()
    queue.cancel(blocker.id)
    # big's two high jobs count as its recent usage: small's normal jobs go first
    assert _start_order(handles) == ["big-high0", "big-high1", "small0", "small1",
                                     "big-normal0", "big-normal1", "big-normal2", "small-low0"]


def test_aging_still_lifts_a_tenants_old_low_job(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    worker_factory(LLM, {**lmq_env, "LMQ_CONCURRENCY": "1", "LMQ_PRIORITY_AGING_S": "2"})
    blocker = _busy(simulator, queue, 60)
    handles = _submit(queue, "a", 1, "low", name="old-low")
    wait_until(lambda: _aged(queue, handles["old-low0"]), timeout=10,
               message="the low job older than the aging time")
    handles.update(_submit(queue, "b", 1, name="new-normal"))
    handles.update(_submit(queue, "b", 1, "low", name="new-low"))
    _waiting(redis_url, 3)
    simulator.admin.clear_faults()
    queue.cancel(blocker.id)  # the worker takes the next job now, before the new ones age
    assert _start_order(handles) == ["old-low0", "new-normal0", "new-low0"]


def _aged(queue: JobQueue, handle: JobHandle) -> bool:
    """The job waited longer than the aging time (2 s) set for the worker."""
    return time.time() - float((queue.job_record(handle.id) or {})["submitted_at"]) > 2.5


def test_the_running_cap_holds_while_other_tenants_run(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    worker_factory(LLM, {**lmq_env, "LMQ_CONCURRENCY": "3", "LMQ_SLOTS": "3",
                         "LMQ_TENANT_MAX_RUNNING": "1"})
    simulator.admin.set_timing(decode_tokens_per_s=30)
    simulator.admin.set_faults(reply_tokens=30)  # about 1 s each
    big = _submit(queue, "big", 3, config=LONG)
    small = _submit(queue, "small", 2, config=LONG)
    big_results = [h.result(timeout=120) for h in big.values()]
    small_results = [h.result(timeout=120) for h in small.values()]
    assert _max_overlap(big_results) == 1 and _max_overlap(small_results) == 1
    assert _max_overlap(big_results + small_results) == 2  # the other tenant ran meanwhile
    _wait_released(redis.Redis.from_url(redis_url), "big", "small")  # nothing leaked


def test_a_sigkilled_workers_job_frees_its_tenants_cap(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    """Tenant `big` at its cap (1) on worker a; b takes small's job, not big's next. Once a
    is killed, b's janitor puts big's job back and releases its count: both of big's jobs
    then run on b (a leaked count would hold them forever)."""
    env = {**lmq_env, "LMQ_CONCURRENCY": "1", "LMQ_HOLD_LEASE_S": "3",
           "LMQ_TENANT_MAX_RUNNING": "1"}
    a = worker_factory(LLM, env)
    simulator.admin.set_timing(decode_tokens_per_s=30)
    simulator.admin.set_faults(reply_tokens=900)  # 30 s: still running when killed
    big = _submit(queue, "big", 1, name="long", config=LONG)
    wait_until(lambda: any(c["fragments"] >= 2 for c in predict_channels(simulator)),
               timeout=60, message="big's first job generating on worker a")
    worker_factory(LLM, env)
    big.update(_submit(queue, "big", 1, name="next"))  # quick jobs: two tokens
    small = _submit(queue, "small", 1)
    assert small["small0"].result(timeout=60).content  # b was free: it took small's job
    broker = redis.Redis.from_url(redis_url)
    assert broker.llen(_list("big")) == 1  # big's next waits: big is at its cap
    assert broker.scard(keys.tenant_running("big")) == 1
    assert big["long0"].status() == "PROGRESS"
    a.kill()
    simulator.admin.set_faults(reply_tokens=3)  # the redelivered long job: quick too
    long_result, next_result = big["long0"].result(timeout=90), big["next0"].result(timeout=90)
    assert long_result.attempt == 2 and next_result.timing.started_at > small[
        "small0"].result(timeout=5).timing.finished_at
    _wait_released(broker, "big")


def test_a_killed_workers_job_comes_back_on_its_tenants_list(
        worker_factory, lmq_env, redis_url, simulator, queue):  # type: ignore[no-untyped-def]
    """The janitor (here a worker of another model) puts a killed worker's low job of
    tenant `big` back on big's low list, marked redelivered, and rings the model queue's
    bell; it then runs there."""
    env = {**lmq_env, "LMQ_CONCURRENCY": "1", "LMQ_HOLD_LEASE_S": "3"}
    a = worker_factory(LLM, env)
    simulator.admin.set_timing(decode_tokens_per_s=30)
    simulator.admin.set_faults(reply_tokens=900)
    job = _submit(queue, "big", 1, "low", config=LONG)["big0"]
    wait_until(lambda: any(c["fragments"] >= 2 for c in predict_channels(simulator)),
               timeout=60, message="the low job generating")
    broker = redis.Redis.from_url(redis_url)
    bell = keys.bell(queue_name(LLM))
    broker.delete(bell)  # the token the submission rang, if a did not use it up
    a.kill()
    worker_factory(EMBED, env)  # its janitor restores a's job once a's lease lapsed
    wait_until(lambda: broker.llen(_list("big", "low")) == 1, timeout=30,
               message="the job back on tenant big's low list")
    assert broker.llen(bell) == 1  # the restore woke the model's idle workers (none yet)
    assert broker.llen(_list(None, "low")) == 0 and broker.llen(_list("big")) == 0
    entry = json.loads(broker.lindex(_list("big", "low"), 0))
    assert entry["headers"]["redelivered"] and entry["headers"]["lmq_tenant"] == "big"
    assert broker.scard(keys.tenant_running("big")) == 0
    assert b"big" in broker.zrange(keys.tenant_turns(_list(None, "low")), 0, -1)
    simulator.admin.set_faults(reply_tokens=3)
    worker_factory(LLM, env)
    assert job.result(timeout=60).attempt == 2


def test_the_take_script_rotates_tenants_and_skips_capped_ones(redis_url: str) -> None:
    """The take script alone on real Redis (no worker): three tenants, one of them the jobs
    without a tenant, take turns whatever their backlog; a tenant at its cap is skipped;
    {-1} when only capped tenants have jobs; a tenant found empty leaves the turns."""
    from workers.celery_config import TENANT_SEP
    from workers.delivery.tenant_turns import TAKE_SCRIPT

    client = redis.Redis.from_url(redis_url)
    base = priority_list("lmq.turns-test", 0)
    for n, tenant in enumerate(["big"] * 3 + ["small", None]):
        entry = json.dumps({"headers": {"lmq_enqueued_at": n, "lmq_tenant": tenant},
                            "properties": {"delivery_tag": f"{tenant}-{n}"}})
        client.lpush(tenant_list(base, tenant), entry)
        if tenant:
            client.zadd(keys.tenant_turns(base), {tenant: 0}, nx=True)
    keys_ = [base, "lmq:popping:test|" + base, keys.tenant_turns(base), keys.turn_counter()]

    def take(cap: int = 0) -> str | None:
        reply = client.eval(TAKE_SCRIPT, len(keys_), *keys_, "0", cap,
                            keys.tenant_running(None), TENANT_SEP, 1)
        if not reply or int(reply[0]) < 0:
            return None if not reply else "capped"
        return str(json.loads(reply[1])["properties"]["delivery_tag"])

    assert [take(), take(), take()] == ["big-0", "small-3", "None-4"]
    assert take(cap=1) == "capped"  # only big has jobs, and big-0 still counts as running
    client.srem(keys.tenant_running("big"), "big-0")  # big-0 finished
    assert [take(cap=1), take()] == ["big-1", "big-2"]
    assert take() is None and client.zcard(keys.tenant_turns(base)) == 0


def test_the_take_script_favours_the_tenant_with_less_recent_usage(redis_url: str) -> None:
    """The script alone: `big` took three jobs, then `small` one; with both waiting, small
    takes again (one recent take against three), though big's turn is the earlier
    (exact turns would take big's); once small has taken three too, big (its takes are
    older, so count a little less) and small take turns."""
    client = redis.Redis.from_url(redis_url)
    base = priority_list("lmq.usage-test", 0)

    def push(tenant: str, n: int) -> None:
        entry = json.dumps({"headers": {"lmq_enqueued_at": n, "lmq_tenant": tenant},
                            "properties": {"delivery_tag": f"{tenant}-{n}"}})
        client.lpush(tenant_list(base, tenant), entry)
        client.zadd(keys.tenant_turns(base), {tenant: 0}, nx=True)

    def take() -> str:
        return str(json.loads(_take_script(client, [base])[1])["properties"]["delivery_tag"])

    for n in range(3):
        push("big", n)
    assert [take(), take(), take()] == ["big-0", "big-1", "big-2"]
    push("small", 3)
    assert take() == "small-3"
    for n in range(4, 8):
        push("big" if n % 2 else "small", n)
    assert [take(), take(), take(), take()] == ["small-4", "small-6", "big-5", "big-7"]


def _take_script(client: redis.Redis, lists: list[str]) -> Any:
    """A take by the script alone (no worker) over `lists`, most urgent first (levels 0, 1,
    2, ...), aging jobs enqueued more than 100 s ago: the reply's (index, raw entry)."""
    from workers.celery_config import TENANT_SEP
    from workers.delivery.tenant_turns import TAKE_SCRIPT

    keys_ = (lists + [f"lmq:popping:test|{name}" for name in lists]
             + [keys.tenant_turns(name) for name in lists] + [keys.turn_counter()])
    return client.eval(TAKE_SCRIPT, len(keys_), *keys_, repr(time.time() - 100), 0,
                       keys.tenant_running(None), TENANT_SEP, *range(len(lists)))


def test_a_take_that_finds_nothing_drops_the_bells_leftover_tokens(redis_url: str) -> None:
    """A token per job queued, used up only by takes that find nothing: once the backlog
    is gone, the take that finds nothing drops them, so an idle worker then blocks on its
    bell instead of running a take and a BLPOP per token left. A take that finds a job
    leaves them (other idle workers of the queue may be waiting on them)."""
    from workers.celery_config import TENANT_SEP
    from workers.delivery.tenant_turns import TAKE_SCRIPT

    client = redis.Redis.from_url(redis_url)
    base = priority_list("lmq.bell-test", 0)
    bell, held = keys.bell("lmq.bell-test"), keys.held("test")
    keys_ = [base, "lmq:popping:test|" + base, keys.tenant_turns(base), keys.turn_counter()]

    def take() -> Any:
        return client.eval(TAKE_SCRIPT, len(keys_), *keys_, "0", 0, keys.tenant_running(None),
                           TENANT_SEP, 0, "unacked", "unacked_index", held, "1234.5", bell)

    client.lpush(base, "job-1")
    client.lpush(bell, *["1"] * 5)
    assert take()[1] == b"job-1"
    assert client.llen(bell) == 5
    assert take() is None
    assert not client.exists(bell)


def test_the_take_script_takes_entries_without_our_headers(redis_url: str) -> None:
    """Entries a plain kombu publish makes (no lmq_enqueued_at or lmq_tenant header), one
    whose headers are null, and one that is not even JSON are taken (oldest first), and a
    tagged one counts under the no-tenant running set."""
    client = redis.Redis.from_url(redis_url)
    base = priority_list("lmq.headers-test", 0)
    entries = [json.dumps({"headers": {}, "properties": {"delivery_tag": "plain"}}),
               json.dumps({"headers": {"lmq_enqueued_at": None, "lmq_tenant": None},
                           "properties": {"delivery_tag": "nulls"}}),
               "not json"]
    for entry in entries:
        client.lpush(base, entry)
    taken = [_take_script(client, [base]) for _ in entries]
    assert [reply[1] for reply in taken] == [e.encode() for e in entries]
    assert client.smembers(keys.tenant_running(None)) == {b"plain", b"nulls"}
    assert _take_script(client, [base]) is None


def test_the_take_script_ages_a_level_past_a_fresher_more_urgent_one(redis_url: str) -> None:
    """Aging lifts a list one level: an aged normal job goes before a fresh high one (its
    level ties, its tail is older); an aged low job, lifted to normal only, after the high
    one, though it is the oldest of all."""
    client = redis.Redis.from_url(redis_url)
    lists = [priority_list("lmq.aging-test", step) for step in (3, 0, 6)]  # high, normal, low
    now = time.time()
    for name, tag, enqueued_at in zip(lists, ["high", "normal", "low"],
                                      [now, now - 200, now - 300], strict=True):
        client.lpush(name, json.dumps({"headers": {"lmq_enqueued_at": enqueued_at},
                                       "properties": {"delivery_tag": tag}}))
    taken = [json.loads(_take_script(client, lists)[1])["properties"]["delivery_tag"]
             for _ in lists]
    assert taken == ["normal", "high", "low"]


def test_the_take_script_keeps_the_usage_hash_small(redis_url: str) -> None:
    """The usage hash expires some half-lives after the last take, and fields whose usage
    has decayed below 0.01 go: a tenant gone for good (one of 4 fields sampled at random by
    each take: after 80 takes still there once in ~10^10 runs) and one whose list is read
    again."""
    from workers.celery_config import USAGE_HALF_LIFE_S
    from workers.delivery.tenant_turns import USAGE_KEPT_HALF_LIVES

    client = redis.Redis.from_url(redis_url)
    base = priority_list("lmq.usage-trim-test", 0)
    usage = keys.turn_usage()
    now = float(client.time()[0])
    old = f"5 {now - 10 * USAGE_HALF_LIFE_S}"  # 5 takes, 10 half-lives ago: ~0.005
    client.hset(usage, mapping={"gone": old, "back": old, "recent": f"1 {now}"})
    for n in range(81):
        tenant = "back" if n == 0 else "big"
        client.lpush(tenant_list(base, tenant), json.dumps(
            {"headers": {"lmq_enqueued_at": n, "lmq_tenant": tenant},
             "properties": {"delivery_tag": f"{tenant}-{n}"}}))
        client.zadd(keys.tenant_turns(base), {tenant: 0}, nx=True)
    taken = [json.loads(_take_script(client, [base])[1])["properties"]["delivery_tag"]
             for _ in range(81)]
    assert taken[0] == "back-0"  # its old usage counts as none, as big's: its tail is older
    fields = client.hgetall(usage)
    assert b"gone" not in fields and b"recent" in fields
    assert fields[b"back"].startswith(b"1.000000 ")  # read, dropped, then its one take
    kept_ms = USAGE_HALF_LIFE_S * USAGE_KEPT_HALF_LIVES * 1000
    assert 0 < client.pttl(usage) <= kept_ms


def test_the_take_script_books_what_it_takes_and_leaves_what_it_cannot_read(
        redis_url: str) -> None:
    """Given kombu's keys and the worker's held set, the script books the entry as kombu's
    `QoS.append` would: [message, exchange, routing key] under its tag in `unacked` (kombu
    reads it back with its restore), the tag in `unacked_index` at the worker's clock and
    in the held set; an entry that is not JSON goes into `popping`, unbooked."""
    from workers.celery_config import TENANT_SEP
    from workers.delivery.tenant_turns import TAKE_SCRIPT

    client = redis.Redis.from_url(redis_url)
    base = priority_list("lmq.book-test", 0)
    message = {"body": "e30=", "headers": {"lmq_tenant": None},
               "properties": {"delivery_tag": "tag-1", "delivery_info": {
                   "exchange": "", "routing_key": "lmq.book-test"}}}
    client.lpush(base, json.dumps(message))
    client.lpush(base, "not json")
    popping, held = "lmq:popping:test|" + base, keys.held("test")
    keys_ = [base, popping, keys.tenant_turns(base), keys.turn_counter()]

    def take() -> Any:
        return client.eval(TAKE_SCRIPT, len(keys_), *keys_, "0", 0, keys.tenant_running(None),
                           TENANT_SEP, 0, "unacked", "unacked_index", held, "1234.5")

    assert take()[2] == 1
    assert json.loads(client.hget("unacked", "tag-1")) == [message, "", "lmq.book-test"]
    assert client.zscore("unacked_index", "tag-1") == 1234.5
    assert client.smembers(held) == {b"tag-1"} and client.llen(popping) == 0
    assert take()[1:] == [b"not json", 0]
    assert client.lrange(popping, 0, -1) == [b"not json"] and client.hlen("unacked") == 1
