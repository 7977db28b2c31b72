"""Config parsing (TOML / dict), the custom catalog and its GGUF files, runtime knobs."""

from __future__ import annotations

from pathlib import Path

import gguf
import httpx
import lmstudio as lms
import pydantic
import pytest

from simulator.config import load_config
from simulator.testing import running_simulator
from tests.simulator.conftest import LLM_KEY

pytestmark = pytest.mark.timeout(30)

TOML = """
default_models = false

[server]
models_dir = "{models_dir}"

[timing]
parallel_slots = 2

[models."tiny-gqa"]
type = "llm"
architecture = "qwen3"
size_bytes = 1000
layers = 3
kv_heads = [2, 4, 8]
head_dim = 16
kv_type = "q8_0"
context_length = 512
loaded = true
"""


def test_toml_catalog_writes_gguf_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(TOML.format(models_dir=tmp_path / "models"))
    config = load_config(str(path))
    assert list(config.models) == ["tiny-gqa"]
    assert config.models["tiny-gqa"].kv_bytes_per_token() == 2 * (2 + 4 + 8) * 16 * 1.0
    with running_simulator(str(path)) as sim, lms.Client(sim.host) as client:
        info = client.llm.model("tiny-gqa").get_info()
        assert info.path == "lmstudio-community/tiny-gqa-GGUF/tiny-gqa-Q4_K_M.gguf"
        reader = gguf.GGUFReader(tmp_path / "models" / info.path)
        fields = {f.name: f.contents() for f in reader.fields.values()}
        assert fields["general.architecture"] == "qwen3"
        assert fields["qwen3.attention.head_count_kv"] == [2, 4, 8]
        assert fields["qwen3.block_count"] == 3
        assert fields["qwen3.attention.value_length"] == 16


def test_dict_overrides_merge_into_defaults() -> None:
    config = load_config({"models": {LLM_KEY: {"context_length": 8192}},
                          "timing": {"decode_tokens_per_s": 0}})
    assert config.models[LLM_KEY].context_length == 8192
    assert config.models[LLM_KEY].layers == 16  # untouched default
    assert config.timing.parallel_slots == 4
    assert len(config.models) == 3


def test_typos_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        load_config({"timing": {"decode_tokens_per_second": 1}})


def test_admin_timing_knobs(simulator) -> None:  # type: ignore[no-untyped-def]
    simulator.admin.set_timing(decode_tokens_per_s=0, reply_min_tokens=2, reply_max_tokens=2,
                               parallel_slots=1)
    state = simulator.admin.state()
    assert state["timing"]["parallel_slots"] == 1
    with lms.Client(simulator.host) as client:
        assert client.llm.model(LLM_KEY).respond("x").stats.predicted_tokens_count == 2


def test_admin_refuses_an_unknown_timing_knob(simulator) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(httpx.HTTPStatusError, match="embedding_parallel"):
        simulator.admin.set_timing(embedding_parallel=2)
    assert simulator.admin.state()["timing"]["embedding_parallel"] == 4  # untouched
