"""Admission end to end, on LM Studio 0.4's memory model: real `celery -A workers worker`
processes, real Redis, the SDK against the simulator.

The simulator's llama-3.2-1b is loaded with 1024 KV cells and 4 parallel predictions. With
a unified KV cache the four share the 1024 cells, and a prediction that finds none free
fails with llama.cpp's "failed to find a memory slot" whatever VRAM is free: a big job
(300-token prompt, max_tokens=200, 150-token reply) holds ~460 cells, so four at once
overflow, two fit. Admission's instance layer (cells and slots shared by the workers of
that instance) keeps a flood at 0 failures; the same flood without admission fails.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from producers.worker_process import WorkerProcess
from tests.integration.test_admission_nvml import lmq
from tests.integration.test_worker_support import (
    LLM,
    NOT_LOADED_LLM,
    client_app,
    final,
    send,
)
from tests.support.wait import wait_until
from workers.admission.status import InstanceStatus, group_status
from workers.contract import ChatJob

pytestmark = [pytest.mark.timeout(240)]

MIB = 1024**2
WEIGHTS_BYTES = 807_694_464  # llama-3.2-1b-instruct in the simulator's catalog
CELLS = 1024
KV_AT_LOAD_BYTES = CELLS * 32 * 1024  # 32 KiB per token
VRAM_BYTES = WEIGHTS_BYTES + KV_AT_LOAD_BYTES + 200 * MIB
BIG_MAX_TOKENS, SMALL_MAX_TOKENS = 200, 40
BIG_PROMPT = "word " * 300  # 300 tokens for the simulator's tokenizer


def sim_config(**timing: Any) -> dict[str, Any]:
    return {
        "gpu": {"vram_bytes": VRAM_BYTES},
        "timing": {"decode_tokens_per_s": 100, **timing},
        "faults": {"reply_tokens": 150},
        "models": {LLM: {"context_length": CELLS},
                   "text-embedding-nomic-embed-text-v1.5": {"loaded": False}},
    }


def running(config: dict[str, Any]) -> Iterator[Any]:
    from simulator.testing import running_simulator

    with running_simulator(config) as sim:
        yield sim


@pytest.fixture()
def unified() -> Iterator[Any]:
    yield from running(sim_config())


@pytest.fixture()
def per_sequence() -> Iterator[Any]:
    yield from running(sim_config(unified_kv=False))


def env_for(redis_url: str, sim: Any, **extra: str) -> dict[str, str]:
    return {"LMQ_BROKER_URL": redis_url, "LMQ_RESULT_BACKEND": redis_url,
            "LMQ_LMSTUDIO_HOST": sim.host, "LMQ_GPU_MEMORY": str(VRAM_BYTES),
            "LMQ_GPU_RESERVE": "0", "LMQ_SLOTS": "4", "PYTHONUNBUFFERED": "1", **extra}


def chat(max_tokens: int, index: int, prompt: str | None = None) -> ChatJob:
    text = prompt or f"Tell me about item {index}."
    return ChatJob(model=LLM, config={"max_tokens": max_tokens},
                   messages=[{"role": "user", "content": text}])


def mixed_jobs(count: int) -> list[ChatJob]:
    """Three big jobs (long prompt) to one small one."""
    return [chat(SMALL_MAX_TOKENS, i) if i % 4 == 3 else chat(BIG_MAX_TOKENS, i, BIG_PROMPT)
            for i in range(count)]


def run_all(app: Celery, jobs: list[ChatJob]) -> dict[str, list[Any]]:
    """Send every job, wait for all; results by outcome ("ok" / "no cells" / "other")."""
    handles = [send(app, job) for job in jobs]
    outcomes: dict[str, list[Any]] = {"ok": [], "no cells": [], "other": []}
    for handle in handles:
        final(handle, timeout_s=180)
        if handle.successful():
            outcomes["ok"].append(handle.result)
        elif "failed to find a memory slot" in str(handle.result):
            outcomes["no cells"].append(str(handle.result))
        else:
            outcomes["other"].append(repr(handle.result))
    return outcomes


def instance(redis_url: str, sim: Any) -> InstanceStatus:
    (found,) = group_status(redis.Redis.from_url(redis_url), sim.host).instances
    return found


def test_flood_on_one_instance_shared_by_two_workers(
        unified: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    workers = [worker_factory(LLM, env_for(redis_url, unified)) for _ in range(2)]
    shape = instance(redis_url, unified)
    assert (shape.cells, shape.parallel, shape.unified, shape.source) == (
        CELLS, 4, True, "LM Studio")
    outcomes = run_all(client_app(redis_url), mixed_jobs(24))
    assert outcomes["no cells"] == [] and outcomes["other"] == []
    assert len(outcomes["ok"]) == 24
    assert {r["worker"] for r in outcomes["ok"]} == {w.hostname for w in workers}
    assert instance(redis_url, unified).reserved_cells == 0


def test_the_same_flood_without_admission_runs_out_of_cells(
        unified: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    """The control: the test above can fail."""
    for _ in range(2):
        worker_factory(LLM, env_for(redis_url, unified, LMQ_ADMISSION="false"))
    outcomes = run_all(client_app(redis_url), mixed_jobs(24))
    assert outcomes["other"] == []
    assert len(outcomes["no cells"]) > 0
    assert unified.admin.state()["vram"]["free_bytes"] >= 200 * MIB  # memory was never short


def test_per_sequence_kv_refuses_what_a_sequence_cannot_hold_at_once(
        per_sequence: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    """Without a unified cache each of the 4 sequences holds 1024 / 4 = 256 cells."""
    worker_factory(LLM, env_for(redis_url, per_sequence))
    shape = instance(redis_url, per_sequence)
    assert (shape.unified, shape.seq_cells) == (False, 256)
    app = client_app(redis_url)
    too_big = final(send(app, chat(BIG_MAX_TOKENS, 0, BIG_PROMPT)), timeout_s=30)
    assert "needs" in str(too_big.result) and "holds at most 256 (1,024 cells / 4 parallel)" in (
        str(too_big.result))
    outcomes = run_all(app, [chat(SMALL_MAX_TOKENS, i) for i in range(12)])
    assert len(outcomes["ok"]) == 12
    # Both layers in `lmq gpu`, `lmq workers` and the metrics.
    gpu = lmq(redis_url, "gpu", "--group", per_sequence.host)
    assert f"instance {LLM} ({LLM})" in gpu
    assert "KV cells    1,024 (per sequence, 256 each), 4 parallel  (LM Studio)" in gpu
    assert f"instance {LLM}: 0 of 1,024 KV cells reserved, 0 of 4 slots in use" in lmq(
        redis_url, "workers")
    from workers.prometheus import pool_registry

    registry = pool_registry(redis_url)
    labels = {"group": per_sequence.host, "instance": LLM, "model": LLM}
    assert registry.get_sample_value("lmq_instance_kv_cells", labels) == 1024
    assert registry.get_sample_value("lmq_instance_parallel", labels) == 4


def failed_predictions(sim: Any) -> list[str]:
    """Errors of the predictions LM Studio (the simulator) ran and failed."""
    return [c["error"] for c in sim.admin.channels()
            if c["endpoint"] == "predict" and c["error"]]


@pytest.mark.parametrize("admission", ["true", "false"])
def test_per_sequence_flood_on_two_workers(
        admission: str, per_sequence: Any, redis_url: str,
        worker_factory: Callable[..., WorkerProcess]) -> None:
    """Mixed prompt sizes on 256-cell sequences: with admission the jobs whose prompt a
    sequence cannot hold are refused before LM Studio and the rest run, no prediction
    fails; without it LM Studio fails those predictions with its context error."""
    for _ in range(2):
        worker_factory(LLM, env_for(redis_url, per_sequence, LMQ_ADMISSION=admission))
    medium = "word " * 150  # ~160 tokens + max_tokens 80: fits a 256-cell sequence
    jobs = [chat(BIG_MAX_TOKENS, i, BIG_PROMPT) if i % 4 == 0 else
            chat(80, i, medium) if i % 4 in (1, 2) else chat(SMALL_MAX_TOKENS, i)
            for i in range(16)]
    outcomes = run_all(client_app(redis_url), jobs)
    assert len(outcomes["ok"]) == 12  # medium and small
    if admission == "true":
        assert failed_predictions(per_sequence) == []
        assert len(outcomes["other"]) == 4
        assert all("holds at most 256" in o for o in outcomes["other"]), outcomes["other"]
    else:  # the control: the same flood fails predictions in LM Studio
        failed = failed_predictions(per_sequence)
        assert len(failed) == 4 and all("n_ctx: 256" in f for f in failed), failed


@pytest.mark.parametrize("admission", ["true", "false"])
def test_jobs_without_max_tokens_on_a_unified_cache(
        admission: str, unified: Any, redis_url: str,
        worker_factory: Callable[..., WorkerProcess]) -> None:
    """A job without max_tokens may grow to n_ctx: on 1,024 unified cells four ~420-token
    replies at once run out of cells. Admission runs them one at a time (each holds the
    cache); an even share of n_ctx / P each admitted all four and they failed."""
    for _ in range(2):
        worker_factory(LLM, env_for(redis_url, unified, LMQ_ADMISSION=admission))
    unified.admin.set_faults(reply_tokens=400)
    jobs = [ChatJob(model=LLM, messages=[{"role": "user", "content": f"Essay {i}."}])
            for i in range(4)]
    outcomes = run_all(client_app(redis_url), jobs)
    assert outcomes["other"] == []
    if admission == "true":
        assert len(outcomes["ok"]) == 4 and failed_predictions(unified) == []
    else:
        assert len(outcomes["no cells"]) > 0


def assert_small_jobs_end_before_the_first_big_one(
        unified: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess],
        big_jobs: int) -> None:
    """`big_jobs` big jobs (~660 cells: one at a time) are sent; once one runs and the
    others wait for cells, two small jobs sent behind them end before the first big one."""
    worker_factory(LLM, env_for(redis_url, unified))
    unified.admin.set_faults(reply_tokens=300)  # big: 3 s of decoding; small: 0.4 s
    app = client_app(redis_url)
    bigs = [send(app, chat(350, i, BIG_PROMPT)) for i in range(big_jobs)]
    wait_until(lambda: (instance(redis_url, unified).slots_in_use,
                        instance(redis_url, unified).waiting) == (1, big_jobs - 1), timeout=30,
               message=f"one big job running, {big_jobs - 1} waiting for cells")
    smalls = [send(app, chat(SMALL_MAX_TOKENS, i)) for i in range(2)]
    finished = {h.id: final(h, timeout_s=120).result for h in bigs + smalls}
    assert all(isinstance(r, dict) for r in finished.values()), finished
    first_big_end = min(finished[h.id]["timing"]["finished_at"] for h in bigs)
    assert all(finished[h.id]["timing"]["finished_at"] < first_big_end for h in smalls)
    assert failed_predictions(unified) == []


def test_small_jobs_run_beside_a_big_one_while_big_ones_wait(
        unified: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    """Big jobs (~660 cells) run one at a time; two small ones sent behind three waiting big
    ones fit beside the running one. The worker's own slots are taken once admitted: taken
    before, the waiting big jobs held all four and the small ones waited for the first big
    one to end."""
    assert_small_jobs_end_before_the_first_big_one(unified, redis_url, worker_factory, 4)


def test_small_jobs_behind_more_waiting_big_ones_than_the_worker_has_threads(
        unified: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    """Six big jobs (~660 cells: one at a time) fill a worker's six threads (LMQ_SLOTS 4 +
    2 prefetch): one runs, five wait for cells. Two small jobs sent behind them fit beside
    the running one. Each job waiting for cells lets the worker take one more from the
    broker (LMQ_ADMISSION_LOOKAHEAD), so the small ones reach admission and run at once;
    without it they stayed in the broker until the first big job ended (head-of-line
    blocking: the shared queue's bypass never saw them)."""
    assert_small_jobs_end_before_the_first_big_one(unified, redis_url, worker_factory, 6)


def test_a_high_job_taken_by_the_lookahead_goes_before_the_waiting_big_ones(
        unified: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    """The lookahead makes a worker hold many jobs waiting for cells; a high-priority job
    it takes after them is admitted next, not behind them (big jobs run one at a time, so
    the order they end in is the order they were admitted)."""
    worker_factory(LLM, env_for(redis_url, unified))
    unified.admin.set_faults(reply_tokens=300)  # big: 3 s of decoding
    app = client_app(redis_url)
    bigs = [send(app, chat(350, i, BIG_PROMPT)) for i in range(5)]
    wait_until(lambda: (instance(redis_url, unified).slots_in_use,
                        instance(redis_url, unified).waiting) == (1, 4), timeout=30,
               message="one big job running, four waiting for cells")
    urgent = chat(350, 99, BIG_PROMPT).model_copy(update={"priority": "high"})
    high = send(app, urgent)
    wait_until(lambda: instance(redis_url, unified).waiting == 5, timeout=30,
               message="the high job waiting for cells too")
    finished = {h.id: final(h, timeout_s=120).result for h in [*bigs, high]}
    assert all(isinstance(r, dict) for r in finished.values()), finished
    order = sorted(finished, key=lambda job_id: finished[job_id]["timing"]["finished_at"])
    assert order.index(high.id) == 1, order  # right after the one running when it came
    assert failed_predictions(unified) == []


QWEN_WEIGHTS_BYTES = 4_683_073_952
TWO_MODELS_VRAM = WEIGHTS_BYTES + KV_AT_LOAD_BYTES + QWEN_WEIGHTS_BYTES + 100 * MIB


@pytest.fixture()
def room_for_one_more() -> Iterator[Any]:
    """Room for qwen's weights next to llama, not for its KV cache too."""
    yield from running({**sim_config(), "gpu": {"vram_bytes": TWO_MODELS_VRAM}})


def test_a_second_model_that_does_not_fit_is_refused_before_loading(
        room_for_one_more: Any, redis_url: str,
        worker_factory: Callable[..., WorkerProcess]) -> None:
    sim, memory = room_for_one_more, str(TWO_MODELS_VRAM)
    worker_factory(LLM, env_for(redis_url, sim, LMQ_GPU_MEMORY=memory))
    qwen = worker_factory(NOT_LOADED_LLM, env_for(redis_url, sim, LMQ_GPU_MEMORY=memory),
                          wait_ready=False)
    assert qwen.process is not None
    wait_until(lambda: not qwen.is_running(), timeout=60,
               message=lambda: f"the second worker to exit; log:\n{qwen.log_tail()}")
    assert qwen.process.returncode == 78, qwen.log_tail()
    errors = [line for line in qwen.log_tail(200).splitlines() if "ERROR/MainProcess" in line]
    assert len(errors) == 1 and f"cannot serve {NOT_LOADED_LLM}" in errors[0], qwen.log_tail()
    assert "bytes of GPU memory, but GPU group" in errors[0]
    loaded = {i["identifier"] for i in sim.admin.state()["instances"]}
    assert loaded == {LLM}  # LM Studio was never asked to load it


def test_cells_of_a_killed_worker_are_released_within_the_lease(
        unified: Any, redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    ttl_s = 2.0
    worker = worker_factory(LLM, env_for(redis_url, unified, LMQ_LEASE_TTL_S=str(ttl_s)))
    unified.admin.set_faults(slow_prefill_s=120.0)  # jobs hold their cells for minutes
    app = client_app(redis_url)
    for index in range(2):
        send(app, chat(BIG_MAX_TOKENS, index, BIG_PROMPT))
    wait_until(lambda: instance(redis_url, unified).slots_in_use == 2, timeout=30,
               message=lambda: f"two admitted jobs; log:\n{worker.log_tail()}")
    assert instance(redis_url, unified).reserved_cells > 2 * BIG_MAX_TOKENS
    assert worker.process is not None
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    client = redis.Redis.from_url(redis_url)
    # Its cells, slots and load are free within the lease; its instance, with no worker
    # left to renew it, drops out of the status.
    wait_until(lambda: all(i.reserved_cells == 0 and i.slots_in_use == 0
                           for i in group_status(client, unified.host).instances),
               timeout=ttl_s + 1.0, message="the dead worker's cells to be released")
    wait_until(lambda: group_status(client, unified.host).weights_bytes == 0,
               timeout=ttl_s + 1.0, message="the dead worker's load to be released")
    wait_until(lambda: group_status(client, unified.host).instances == [],
               timeout=ttl_s + 1.0, message="the dead worker's instance to drop out")


# --- MLX: the KV cache grows per token out of (unified) memory ------------------------
MLX = "mlx-llm"
MLX_WEIGHTS_BYTES = 100_000_000
MLX_ROOM_BYTES = 40 * MIB  # ~1,280 tokens of KV at 32 KiB: two big jobs, never four
MLX_VRAM = MLX_WEIGHTS_BYTES + MLX_ROOM_BYTES


@pytest.fixture()
def mlx_host() -> Iterator[Any]:
    yield from running({
        "gpu": {"vram_bytes": MLX_VRAM}, "timing": {"decode_tokens_per_s": 100},
        "faults": {"reply_tokens": 150},
        "models": {MLX: {"format": "mlx", "size_bytes": MLX_WEIGHTS_BYTES, "layers": 16,
                         "kv_heads": 8, "head_dim": 64, "context_length": CELLS},
                   LLM: {"loaded": False},
                   "text-embedding-nomic-embed-text-v1.5": {"loaded": False}}})


def mlx_jobs(count: int) -> list[ChatJob]:
    return [job.model_copy(update={"model": MLX}) for job in mixed_jobs(count)]


@pytest.mark.parametrize("admission", ["true", "false"])
def test_mlx_flood_holds_kv_bytes_per_job(
        admission: str, mlx_host: Any, redis_url: str,
        worker_factory: Callable[..., WorkerProcess]) -> None:
    worker, _ = (worker_factory(MLX, env_for(redis_url, mlx_host, LMQ_GPU_MEMORY=str(MLX_VRAM),
                                             LMQ_ADMISSION=admission)) for _ in range(2))
    app = client_app(redis_url)
    handles = [send(app, job) for job in mlx_jobs(16)]
    failed = [str(h.result) for h in handles if not final(h, timeout_s=180).successful()]
    if admission == "true":
        assert "KV 32,768 bytes/token (config.json)" in worker.log_tail(300)
        assert failed == []
    else:  # the control: the same flood runs the KV cache out of memory
        assert failed and all("out of memory" in f for f in failed), failed
