"""AdmissionGate built from settings (build_gate) against a real redis-server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.support.wait import wait_until
from tests.unit.test_admission_gguf import write_gguf
from workers.admission import AdmissionGate, build_gate
from workers.admission.seam import Gate, ModelFacts, NullGate
from workers.admission.status import group_status
from workers.error import DoesNotFitError, JobCancelledError
from workers.settings import Settings

MIB = 1024**2
KIB = 1024
GROUP = "gpu-box:1234"


@pytest.fixture()
def make_gate(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., Gate]]:
    gates: list[Gate] = []
    path = str(write_gguf(tmp_path / "m.gguf"))  # 32 KiB per token

    def make(model: str = "m", weights: int = 100 * MIB, **fields: object) -> Gate:
        settings = Settings(_env_file=None, redis_url=redis_url, admission_group=GROUP,  # type: ignore[call-arg]
                            gpu_memory=fields.pop("gpu_memory", 300 * MIB), gpu_reserve=0,
                            **fields)
        # An engine that grows KV per token (MLX): jobs hold KV bytes in the host layer.
        facts = ModelFacts(model, weights, path=path, context_length=4096,
                           engine=str(fields.pop("engine", "mlx")))
        gate = build_gate(settings, facts)
        gates.append(gate)
        return gate

    yield make
    for gate in gates:
        gate.close()


def status(redis_url: str):  # type: ignore[no-untyped-def]
    return group_status(redis.Redis.from_url(redis_url), GROUP)


def test_admission_off_is_the_null_gate(make_gate: Callable[..., Gate]) -> None:
    assert isinstance(make_gate(admission=False), NullGate)


def test_job_reserves_prompt_plus_output(make_gate: Callable[..., Gate], redis_url: str) -> None:
    gate = make_gate()
    gate.before_load()
    with gate.admit("j1", 1000, 24, lambda: False):
        now = status(redis_url)
        assert now.kv_bytes == 1024 * 32 * KIB and now.slots_in_use == {"m": 1}
        assert now.weights_bytes == 100 * MIB
    assert status(redis_url).kv_bytes == 0


def test_job_that_can_never_fit_fails_with_numbers(make_gate: Callable[..., Gate]) -> None:
    gate = make_gate(gpu_memory=150 * MIB)  # 100 MiB of weights: 50 MiB for KV
    gate.before_load()
    # max_tokens unset: the whole context is reserved
    with pytest.raises(DoesNotFitError) as info, gate.admit("huge", 100, 0, lambda: False):
        pass
    message = str(info.value)
    assert "job huge (4,096 tokens x 32,768 bytes/token) needs 134,217,728 bytes" in message
    assert "at most 52,428,800 bytes for KV cache" in message
    assert type(info.value)(*info.value.args).args == info.value.args


def test_load_that_does_not_fit_next_to_admitted_jobs(make_gate: Callable[..., Gate],
                                                      redis_url: str) -> None:
    first = make_gate()
    first.before_load()
    with first.admit("j", 2000, 1000, lambda: False):  # ~94 MiB of KV
        second = make_gate(model="other", weights=150 * MIB)
        with pytest.raises(DoesNotFitError, match="150,000,000|157,286,400"):
            second.before_load()
    assert "other" not in status(redis_url).models


def test_load_waits_for_fit_when_configured(make_gate: Callable[..., Gate],
                                            redis_url: str) -> None:
    first = make_gate()
    first.before_load()
    release = threading.Event()
    admitted = threading.Event()

    def hold() -> None:
        with first.admit("j", 2000, 1000, lambda: False):
            admitted.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    admitted.wait(10)
    second = make_gate(model="other", weights=150 * MIB, wait_for_fit_on_load=True)
    loader = threading.Thread(target=second.before_load, daemon=True)
    loader.start()
    wait_until(lambda: status(redis_url).waiting_jobs == 0 and loader.is_alive(), timeout=5)
    assert "other" not in status(redis_url).models
    release.set()
    wait_until(lambda: "other" in status(redis_url).models, timeout=5)
    loader.join(5)


def test_model_larger_than_the_budget(make_gate: Callable[..., Gate]) -> None:
    with pytest.raises(DoesNotFitError, match="can never fit"):
        make_gate(weights=400 * MIB, wait_for_fit_on_load=True).before_load()


def test_cancel_while_waiting_for_admission(make_gate: Callable[..., Gate],
                                            redis_url: str) -> None:
    gate = make_gate(slots=1)
    assert isinstance(gate, AdmissionGate)
    gate.semaphore.cancel_check_s = 0.05
    flag = threading.Event()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with gate.admit("second", 10, 10, flag.is_set):
                pass
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    with gate.admit("first", 10, 10, lambda: False):
        waiter = threading.Thread(target=second, daemon=True)
        waiter.start()
        wait_until(lambda: status(redis_url).waiting_jobs == 1, timeout=5)
        flag.set()
        waiter.join(5)
    assert len(errors) == 1 and isinstance(errors[0], JobCancelledError)
    assert status(redis_url).waiting_jobs == 0


def test_embedding_jobs_take_a_slot_only(make_gate: Callable[..., Gate],
                                         redis_url: str) -> None:
    gate = make_gate(model="embed")
    assert isinstance(gate, AdmissionGate)
    gate.is_embedding = True
    with gate.admit("e", 0, 0, lambda: False):
        now = status(redis_url)
        assert now.kv_bytes == 0 and now.slots_in_use == {"embed": 1}


def test_tight_when_the_job_would_not_fit_the_free_memory_last_seen(
        make_gate: Callable[..., Gate]) -> None:
    gate = make_gate()  # 300 MiB budget, 100 MiB weights, 32 KiB of KV per token
    gate.before_load()
    assert not gate.is_tight(6000, 24)  # nothing seen yet: the local bound is used
    with gate.admit("big", 5000, 24, lambda: False):  # 156 MiB of the 200 MiB KV room
        assert gate.is_tight(2000, 24)  # 63 MiB > the 44 MiB free after "big"
        assert not gate.is_tight(1000, 24)  # 32 MiB still fits


def test_llama_cpp_holds_its_kv_cache_at_load_and_jobs_take_instance_cells(
        make_gate: Callable[..., Gate], redis_url: str, tmp_path: Path) -> None:
    gate = make_gate(engine="llama.cpp", gpu_memory=300 * MIB)
    gate.before_load()  # 100 MiB of weights + 4,096 cells x 32 KiB
    assert status(redis_url).weights_bytes == 100 * MIB + 128 * MIB
    path = str(write_gguf(tmp_path / "m.gguf"))  # 32 KiB per token
    gate.loaded(ModelFacts("m", 100 * MIB, path=path, context_length=2048, identifier="m",
                           parallel=2, unified_kv=False))
    assert status(redis_url).weights_bytes == 100 * MIB + 64 * MIB  # as loaded: 2,048 cells
    with gate.admit("j1", 1000, 24, lambda: False):
        (inst,) = status(redis_url).instances
        assert (inst.cells, inst.seq_cells, inst.reserved_cells, inst.slots_in_use) == (
            2048, 1024, 1024, 1)
        assert status(redis_url).kv_bytes == 0  # no per-job bytes on the host
    with pytest.raises(DoesNotFitError, match="needs 1,025 tokens of KV cache .* holds at "
                       "most 1,024 \\(2,048 cells / 2 parallel\\)"), \
            gate.admit("j2", 1000, 25, lambda: False):
        pass
    assert status(redis_url).instances[0].reserved_cells == 0
    # No max_tokens (the runner passes context - prompt): all a sequence holds, n_ctx / P
    with gate.admit("j3", 10, 2048 - 10, lambda: False), gate.admit("j4", 10, 0, lambda: False):
        assert status(redis_url).instances[0].reserved_cells == 2 * 1024


def test_a_job_without_max_tokens_holds_a_whole_unified_cache(
        make_gate: Callable[..., Gate], redis_url: str, tmp_path: Path) -> None:
    """With a unified cache one sequence may grow to n_ctx: nothing else fits beside it."""
    gate = make_gate(engine="llama.cpp", gpu_memory=300 * MIB)
    gate.before_load()
    gate.loaded(ModelFacts("m", 100 * MIB, path=str(write_gguf(tmp_path / "m.gguf")),
                           context_length=2048, identifier="m", parallel=4, unified_kv=True))
    with gate.admit("bounded", 100, 200, lambda: False):
        assert status(redis_url).instances[0].reserved_cells == 300
    admitted = threading.Event()

    def second() -> None:
        with gate.admit("second", 10, 0, lambda: False):
            admitted.set()

    with gate.admit("unbounded", 10, 2048 - 10, lambda: False):
        assert status(redis_url).instances[0].reserved_cells == 2048
        waiter = threading.Thread(target=second)
        waiter.start()
        wait_until(lambda: status(redis_url).instances[0].waiting >= 1, timeout=5,
                   message="the second job to wait for cells")
        assert not admitted.is_set()
    waiter.join(timeout=5)
    assert admitted.is_set()


def test_mlx_sequences_share_no_cells_only_the_host_memory(
        make_gate: Callable[..., Gate], redis_url: str, tmp_path: Path) -> None:
    """MLX allocates no cells: two jobs without max_tokens (each may grow to n_ctx = 2,048
    tokens, 64 MiB) run at once when the host's memory holds both, whatever the instance
    says of a unified cache; a third does not fit the 150 MiB of KV room beside them."""
    gate = make_gate(engine="mlx", gpu_memory=250 * MIB)  # 100 MiB of weights
    gate.before_load()
    gate.loaded(ModelFacts("m", 100 * MIB, path=str(write_gguf(tmp_path / "m.gguf")),
                           context_length=2048, identifier="m", parallel=4, unified_kv=True,
                           engine="mlx"))
    deadline = time.monotonic() + 5  # "b" waiting for "a" is a failure, not a hang
    with gate.admit("a", 10, 0, lambda: False), \
            gate.admit("b", 10, 2048 - 10, lambda: time.monotonic() > deadline):
        now = status(redis_url)
        assert now.kv_bytes == 2 * 2048 * 32 * KIB
        assert (now.instances[0].seq_cells, now.instances[0].slots_in_use) == (2048, 2)
        assert gate.is_tight(10, 0)  # 64 MiB more than the 22 MiB free
