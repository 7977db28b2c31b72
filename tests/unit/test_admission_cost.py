"""Model cost (weights, KV per token, its sources), reservations and thread counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_admission_gguf import write_gguf
from workers.admission import DEFAULT_CONTEXT_LENGTH, plan_cost, thread_count
from workers.admission.estimate import (
    estimate_kv_bytes_per_token,
    find_gguf,
    model_cost,
    weights_bytes,
)
from workers.admission.gate import reserved_tokens
from workers.admission.seam import ModelFacts
from workers.settings import Settings

GIB = 1024**3
KIB = 1024


def settings(**fields: object) -> Settings:
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


@pytest.mark.parametrize(("ratio", "expected"), [
    (None, 1000), (1.0, 1000), (0.5, 500), (0.0, 0), (1.7, 1000),
])
def test_weights_are_size_times_offload_ratio(ratio: float | None, expected: int) -> None:
    assert weights_bytes(ModelFacts("m", 1000, offload_ratio=ratio)) == expected


@pytest.mark.parametrize(("size_bytes", "low_kib", "high_kib"), [
    (807_694_464, 32, 64),  # Llama 3.2 1B Q4_K_M: true 32 KiB
    (4_920_000_000, 128, 200),  # Llama 3 8B: true 128 KiB
    (42_500_000_000, 320, 800),  # Llama 3 70B: true 320 KiB
])
def test_estimate_is_above_gqa_truth(size_bytes: int, low_kib: int, high_kib: int) -> None:
    assert low_kib * KIB <= estimate_kv_bytes_per_token(size_bytes) <= high_kib * KIB


def test_cost_from_gguf_beats_setting_and_estimate(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    cost = model_cost(ModelFacts("m", 800_000_000, path=str(path)), kv_bytes_setting=999)
    assert (cost.kv_bytes_per_token, cost.kv_source) == (32 * KIB, "gguf")
    assert cost.context_length == 131072  # trained context when the worker does not say


def test_setting_when_gguf_unreadable(tmp_path: Path) -> None:
    facts = ModelFacts("m", 800_000_000, path=str(tmp_path / "missing.gguf"))
    cost = model_cost(facts, kv_bytes_setting=12345)
    assert (cost.kv_bytes_per_token, cost.kv_source) == (12345, "setting")


def test_estimate_when_nothing_else(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"garbage" * 10)
    cost = model_cost(ModelFacts("m", 800_000_000, path=str(bad)))
    assert cost.kv_source == "estimate"
    assert cost.kv_bytes_per_token == estimate_kv_bytes_per_token(800_000_000)


def test_find_gguf_relative_to_lmstudio_models(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    target = write_gguf(_mkdir(tmp_path / ".lmstudio/models/pub/m") / "m.gguf")
    assert find_gguf("pub/m/m.gguf") == target
    assert find_gguf(None) is None


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def test_plan_cost_context_precedence(tmp_path: Path) -> None:
    path = str(write_gguf(tmp_path / "m.gguf"))
    assert plan_cost(settings(), ModelFacts("m", 1, path=path, context_length=8192)
                     ).context_length == 8192
    assert plan_cost(settings(context_length=2048), ModelFacts("m", 1, path=path)
                     ).context_length == 2048
    assert plan_cost(settings(), ModelFacts("m", 1, path=path)).context_length == 131072
    assert plan_cost(settings(), ModelFacts("m", 1)).context_length == DEFAULT_CONTEXT_LENGTH


@pytest.mark.parametrize(("prompt", "max_out", "context", "expected"), [
    (100, 50, 4096, 150),  # prompt + max output
    (100, 0, 4096, 4096),  # max_tokens unset: up to the context length
    (100, -1, 4096, 4096),
    (4000, 500, 4096, 4096),  # capped at the context
    (5000, 10, 4096, 5000),  # over-long prompt: still reserve the prompt
    (100, 50, None, 150),
])
def test_reserved_tokens(prompt: int, max_out: int, context: int | None, expected: int) -> None:
    assert reserved_tokens(prompt, max_out, context) == expected


def test_reserved_tokens_unset_without_context() -> None:
    with pytest.raises(ValueError):
        reserved_tokens(10, 0, None)


def test_thread_count_is_the_slots_unless_the_budget_cannot_hold_short_jobs(tmp_path: Path) -> None:
    path = str(write_gguf(tmp_path / "m.gguf"))  # 32 KiB/token
    # An engine that grows KV per token (MLX): jobs take GPU memory as they run.
    facts = ModelFacts("m", GIB, path=path, context_length=4096, engine="mlx")
    llama_cpp = ModelFacts("m", GIB, path=path, context_length=4096)  # KV taken at load
    assert thread_count(settings(gpu_memory=GIB, gpu_reserve=0, slots=4), llama_cpp) == 4
    assert thread_count(settings(concurrency=7), facts) == 7
    assert thread_count(settings(admission=False, slots=3), facts) == 3
    assert thread_count(settings(gpu_memory="24GiB", slots=4), facts) == 4
    # 1 GiB of weights + 1 GiB reserve + room for 2 quarter-context jobs (2 x 32 MiB): still
    # four, since the semaphore admits each job by its own KV and small jobs fit four at once
    tight = 2 * GIB + 2 * 1024 * 32 * KIB
    assert thread_count(settings(gpu_memory=tight, gpu_reserve=GIB, slots=4), facts) == 4
    # no KV room at all next to the weights: one prediction (each job then fails at once)
    assert thread_count(settings(gpu_memory=GIB, gpu_reserve=0, slots=4), facts) == 1
    # room for three short (256-token, 8 MiB) jobs: three
    assert thread_count(settings(gpu_memory=GIB + 24 * 1024 * KIB, gpu_reserve=0, slots=4),
                        facts) == 3
    embed = ModelFacts("e", GIB, is_embedding=True)
    assert thread_count(settings(gpu_memory="24GiB", slots=5), embed) == 5
