"""The weighted semaphore against a real redis-server: fairness, slots, leases, no spinning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import redis

from tests.support.wait import wait_until
from workers.admission.semaphore import UNKNOWN_BUDGET, GroupSemaphore, Ticket
from workers.admission.status import all_status, group_status, list_groups
from workers.error import AdmissionClosedError, DoesNotFitError, JobCancelledError, TransientError

GROUP = "gpu-host:1234"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture()
def make_sem(client: redis.Redis) -> Iterator[Callable[..., GroupSemaphore]]:
    made: list[GroupSemaphore] = []

    def make(budget: int = 1000, ttl_s: float = 15.0, **kwargs: object) -> GroupSemaphore:
        sem = GroupSemaphore(client, GROUP, budget, ttl_s, **kwargs)  # type: ignore[arg-type]
        made.append(sem)
        return sem

    yield make
    for sem in made:
        sem.close()


def job(nbytes: int, model: str = "m", slots: int = 4, label: str = "") -> Ticket:
    return Ticket("job", model, nbytes, slots, label)


class Waiter:
    """Acquire in a thread; record the order of admission."""

    def __init__(self, sem: GroupSemaphore, ticket: Ticket, order: list[str],
                 cancelled: Callable[[], bool] = lambda: False,
                 short: Callable[[], AbstractContextManager[None]] | None = None) -> None:
        self.sem, self.ticket, self.order, self.short = sem, ticket, order, short
        self.held: Ticket | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(cancelled,), daemon=True)
        self.thread.start()

    def _run(self, cancelled: Callable[[], bool]) -> None:
        try:
            self.held = self.sem.acquire(self.ticket, cancelled, short=self.short)
            self.order.append(self.ticket.label)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc

    def done(self) -> bool:
        return not self.thread.is_alive()


def waiting(client: redis.Redis) -> int:
    return group_status(client, GROUP).waiting_jobs


def test_admits_at_once_when_it_fits(make_sem: Callable[..., GroupSemaphore],
                                     client: redis.Redis) -> None:
    sem = make_sem()
    held = [sem.acquire(job(300)) for _ in range(3)]
    status = group_status(client, GROUP)
    assert (status.kv_bytes, status.free_bytes, status.slots_in_use) == (900, 100, {"m": 3})
    sem.release(*(t.id for t in held))
    assert group_status(client, GROUP).kv_bytes == 0


def test_never_fits_fails_at_once_with_numbers(make_sem: Callable[..., GroupSemaphore]) -> None:
    sem = make_sem()
    sem.acquire(Ticket("load", "m", 400))
    with pytest.raises(DoesNotFitError) as info:
        sem.acquire(job(700, label="job big"))
    assert "job big needs 700 bytes" in str(info.value)
    assert "at most 600 bytes" in str(info.value) and "weights 400" in str(info.value)


def test_first_come_first_admitted(make_sem: Callable[..., GroupSemaphore],
                                   client: redis.Redis) -> None:
    sem = make_sem()
    first = sem.acquire(job(1000))
    order: list[str] = []
    waiters = []
    for count, name in enumerate(("a", "b", "c"), start=1):
        waiters.append(Waiter(sem, job(600, label=name), order))
        wait_until(lambda n=count: waiting(client) == n, timeout=5)
    sem.release(first.id)
    for w in waiters:
        wait_until(lambda w=w: w.held is not None or w.done(), timeout=5)
        assert w.held is not None, w.error
        sem.release(w.held.id)
    assert order == ["a", "b", "c"]


def test_a_high_job_goes_before_waiting_normal_ones(make_sem: Callable[..., GroupSemaphore],
                                                   client: redis.Redis) -> None:
    """A worker holds more jobs than run (its lookahead): a high job that reaches the queue
    after them must not wait behind them; among the others, arrival order."""
    sem = make_sem()
    first = sem.acquire(job(1000))
    order: list[str] = []
    waiters = []
    for count, (name, high) in enumerate((("a", False), ("b", False), ("urgent", True)), 1):
        ticket = Ticket("job", "m", 600, 4, name, high=high)
        waiters.append(Waiter(sem, ticket, order))
        wait_until(lambda n=count: waiting(client) == n, timeout=5)
    by_name = {w.ticket.label: w for w in waiters}
    sem.release(first.id)
    for count in range(1, 4):  # 600 bytes each: one at a time
        wait_until(lambda n=count: len(order) == n, timeout=5)
        held = by_name[order[-1]].held
        assert held is not None
        sem.release(held.id)
    assert order == ["urgent", "a", "b"]


def test_short_is_held_while_waiting_for_memory_not_for_a_slot(
        make_sem: Callable[..., GroupSemaphore], client: redis.Redis) -> None:
    """`short()` (a worker's lookahead) is entered only while a ticket waits because it
    does not fit the free bytes: waiting for a slot, more jobs taken would not run."""
    sem = make_sem()
    entered: list[str] = []

    @contextmanager
    def short(name: str) -> Iterator[None]:
        entered.append(f"+{name}")
        yield
        entered.append(f"-{name}")

    big = sem.acquire(job(900, slots=2))
    order: list[str] = []
    memory = Waiter(sem, job(300, slots=2, label="memory"), order, short=lambda: short("m"))
    wait_until(lambda: entered == ["+m"], timeout=5)
    small = sem.acquire(job(50, slots=2))  # fits the free 100 bytes; both slots now held
    slot = Waiter(sem, job(10, slots=2, label="slot"), order, short=lambda: short("s"))
    wait_until(lambda: waiting(client) == 2, timeout=5)
    sem.release(big.id)  # 950 free: "memory" admitted (its context exits), "slot" waits on
    wait_until(lambda: order == ["memory"], timeout=5)
    assert entered == ["+m", "-m"]
    sem.release(small.id)
    wait_until(lambda: order == ["memory", "slot"], timeout=5)
    assert entered == ["+m", "-m"]  # "slot" only ever waited for a slot
    for w in (memory, slot):
        assert w.held is not None
        sem.release(w.held.id)


def test_small_job_overtakes_large_head_until_bypass_limit(
        make_sem: Callable[..., GroupSemaphore], client: redis.Redis) -> None:
    sem = make_sem(max_bypass=2)
    running = sem.acquire(job(600))
    order: list[str] = []
    large = Waiter(sem, job(600, label="large"), order)
    wait_until(lambda: waiting(client) == 1, timeout=5)
    small = [sem.acquire(job(100, label=f"s{i}")) for i in range(2)]  # overtake twice
    late = Waiter(sem, job(100, label="late"), order)  # fits, but the large job has waited
    wait_until(lambda: waiting(client) == 2, timeout=5)
    assert group_status(client, GROUP).free_bytes == 200
    sem.release(small[0].id)  # 300 free: late fits, but is held back behind large
    assert waiting(client) == 2 and order == []
    sem.release(running.id)  # 900 free: large and late both admitted
    wait_until(lambda: len(order) == 2, timeout=5)
    assert sorted(order) == ["large", "late"]
    for t in [small[1], large.held, late.held]:
        assert t is not None
        sem.release(t.id)


def test_slots_cap_per_model(make_sem: Callable[..., GroupSemaphore],
                             client: redis.Redis) -> None:
    sem = make_sem(budget=10_000)
    held = [sem.acquire(job(10, slots=2)) for _ in range(2)]
    order: list[str] = []
    third = Waiter(sem, job(10, slots=2, label="third"), order)
    wait_until(lambda: waiting(client) == 1, timeout=5)
    other = sem.acquire(job(10, model="other", slots=2))  # another model's slots are free
    assert group_status(client, GROUP).slots_in_use == {"m": 2, "other": 1}
    assert third.held is None
    sem.release(held[0].id)
    wait_until(lambda: third.held is not None, timeout=5)
    assert group_status(client, GROUP).slots_in_use == {"m": 2, "other": 1}
    sem.release(held[1].id, third.held.id, other.id)


def test_weights_count_once_per_model_and_shrink_kv_room(
        make_sem: Callable[..., GroupSemaphore], client: redis.Redis) -> None:
    one, two = make_sem(), make_sem()  # two workers of one host
    one.acquire(Ticket("load", "m", 300))
    two.acquire(Ticket("load", "m", 300))
    two.acquire(Ticket("load", "n", 200))
    status = group_status(client, GROUP)
    assert (status.weights_bytes, status.models) == (500, {"m": 300, "n": 200})
    one.acquire(job(500))
    with pytest.raises(DoesNotFitError, match="has 0 free"):
        two.acquire(Ticket("load", "x", 1), wait=False)
    assert waiting(client) == 0 and group_status(client, GROUP).reserved_bytes == 1000


def test_two_workers_share_one_budget(make_sem: Callable[..., GroupSemaphore],
                                      client: redis.Redis) -> None:
    one, two = make_sem(), make_sem()
    held = one.acquire(job(700))
    order: list[str] = []
    other = Waiter(two, job(700, label="two"), order)
    wait_until(lambda: waiting(client) == 1, timeout=5)
    assert other.held is None
    one.release(held.id)
    wait_until(lambda: order == ["two"], timeout=5)


def test_cancel_while_waiting(make_sem: Callable[..., GroupSemaphore],
                              client: redis.Redis) -> None:
    sem = make_sem(cancel_check_s=0.05)
    sem.acquire(job(1000))
    flag = threading.Event()
    w = Waiter(sem, job(500, label="c"), [], cancelled=flag.is_set)
    wait_until(lambda: waiting(client) == 1, timeout=5)
    flag.set()
    wait_until(w.done, timeout=5)
    assert isinstance(w.error, JobCancelledError)
    assert waiting(client) == 0


def test_close_gives_everything_back(make_sem: Callable[..., GroupSemaphore],
                                     client: redis.Redis) -> None:
    sem = make_sem()
    sem.acquire(Ticket("load", "m", 100))
    sem.acquire(job(100))
    sem.close()
    assert group_status(client, GROUP).reserved_bytes == 0
    assert list_groups(client) == [GROUP]
    assert [s.group for s in all_status(client)] == [GROUP]


HOLDER = """
import sys, time, redis
from workers.admission.semaphore import UNKNOWN_BUDGET, GroupSemaphore, Ticket
from workers.error import AdmissionClosedError
sem = GroupSemaphore(redis.Redis.from_url(sys.argv[1]), sys.argv[2], 1000, float(sys.argv[3]))
sem.acquire(Ticket("job", "m", 800, 4))
print("held", flush=True)
time.sleep(600)
"""


def test_lease_of_killed_holder_expires(redis_url: str, client: redis.Redis,
                                        make_sem: Callable[..., GroupSemaphore]) -> None:
    ttl_s = 1.5
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, redis_url, GROUP, str(ttl_s)],
                            stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
        sem = make_sem(ttl_s=ttl_s)
        order: list[str] = []
        w = Waiter(sem, job(800, label="after"), order)
        wait_until(lambda: waiting(client) == 1, timeout=5)
        wait_until(lambda: time.sleep(ttl_s) or True, timeout=2 * ttl_s)  # holder renews
        assert w.held is None, "the live holder's lease must not expire"
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: w.held is not None, timeout=ttl_s + 1.0)
        assert time.monotonic() - killed <= ttl_s + 0.5
    finally:
        proc.kill()
        proc.wait()


def _commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def test_waiting_does_not_spin(make_sem: Callable[..., GroupSemaphore],
                               client: redis.Redis) -> None:
    sem = make_sem(ttl_s=15.0, cancel_check_s=0.5)
    held = sem.acquire(job(1000))
    order: list[str] = []
    Waiter(sem, job(500, label="w"), order)
    wait_until(lambda: waiting(client) == 1, timeout=5)
    before = _commands(client)
    blocked_s = 3.0
    deadline = time.monotonic() + blocked_s
    wait_until(lambda: time.monotonic() >= deadline, timeout=blocked_s + 1, interval=0.5)
    after = _commands(client)
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    calls = {k: v for k, v in calls.items() if v and k not in ("info", "hget", "zrange",
                                                                "time", "hgetall", "multi",
                                                                "exec")}
    # One BLPOP per cancel check (0.5 s) and nothing else: no polling of the lease state.
    assert calls.get("blpop", 0) <= blocked_s / 0.5 + 1, calls
    assert sum(calls.values()) - calls.get("blpop", 0) <= 2, calls
    sem.release(held.id)
    wait_until(lambda: order == ["w"], timeout=5)


def test_expired_waiting_ticket_queues_again(make_sem: Callable[..., GroupSemaphore],
                                             client: redis.Redis) -> None:
    holder, other = make_sem(ttl_s=1.0), make_sem(ttl_s=1.0)
    held = holder.acquire(job(1000))
    order: list[str] = []
    w = Waiter(other, job(500, label="w"), order)
    wait_until(lambda: waiting(client) == 1, timeout=5)
    (ticket_id,) = [i.decode() for i in client.zrange(f"lmq:admission:{GROUP}:queue", 0, -1)]
    holder.release(ticket_id)  # as if its lease had expired
    wait_until(lambda: waiting(client) == 1 and ticket_id.encode() not in
               client.zrange(f"lmq:admission:{GROUP}:queue", 0, -1), timeout=5)
    holder.release(held.id)
    wait_until(lambda: order == ["w"], timeout=5)
    assert w.error is None


def test_close_wakes_waiters_with_a_transient_error(make_sem: Callable[..., GroupSemaphore],
                                                    client: redis.Redis) -> None:
    holder, sem = make_sem(), make_sem()
    holder.acquire(job(1000))
    w = Waiter(sem, job(500, label="w"), [])
    wait_until(lambda: waiting(client) == 1, timeout=5)
    sem.close()
    wait_until(w.done, timeout=2)
    assert isinstance(w.error, AdmissionClosedError) and isinstance(w.error, TransientError)
    assert waiting(client) == 0


def test_unknown_host_memory_admits_by_slots_only(
        make_sem: Callable[..., GroupSemaphore], client: redis.Redis) -> None:
    """No byte limit (any KV size is admitted, loads too), but still the model's slots."""
    sem = make_sem(budget=UNKNOWN_BUDGET)
    sem.acquire(Ticket("load", "m", 10**15))
    held = [sem.acquire(job(10**14, slots=2)), sem.acquire(job(10**14, slots=2))]
    assert sem.last_free_bytes is None
    order: list[str] = []
    third = Waiter(sem, job(1, slots=2, label="third"), order)
    wait_until(lambda: group_status(client, GROUP).waiting_jobs == 1, timeout=10,
               message="the third job to wait for a slot")
    status = group_status(client, GROUP)
    assert (status.host_memory_known, status.free_bytes, status.slots_in_use) == (
        False, -1, {"m": 2})
    sem.release(held[0].id)
    third.thread.join(timeout=10)
    assert order == ["third"] and third.error is None
