"""LMQ_LOAD_CONFIG through a real worker: every key reaches LM Studio (the simulator), the
K/V cache types reach admission, and a wrong key stops the start with one line naming it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import lmstudio as lms
import pytest

from producers.worker_process import WorkerProcess
from tests.integration.test_worker_support import NOT_LOADED_LLM, client_app, send
from tests.support.wait import wait_until
from workers.contract import CompletionJob

pytestmark = [pytest.mark.timeout(120)]
EXIT_CONFIG = 78
LOAD_CONFIG = {
    "flashAttention": True, "llamaKCacheQuantizationType": "q8_0",
    "llamaVCacheQuantizationType": "q8_0", "evalBatchSize": 256, "ropeFrequencyBase": 1e6,
    "ropeFrequencyScale": 0.5, "keepModelInMemory": True, "tryMmap": False,
    "offloadKVCacheToGpu": True, "numExperts": 2, "contextLength": 8192,
}
# qwen2.5-7b-instruct in the simulator: 28 layers x 4 KV heads x 128, K and V at q8_0
Q8_KV_BYTES_PER_TOKEN = 28 * 4 * 128 * 2 * 34 // 32


def test_every_key_reaches_lm_studio_and_admission(
        lmq_env: dict[str, str], simulator: Any, redis_url: str,
        worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory(NOT_LOADED_LLM, {**lmq_env, "LMQ_GPU_OFFLOAD": "0.5",
                                             "LMQ_LOAD_CONFIG": json.dumps(LOAD_CONFIG)})
    with lms.Client(simulator.host) as client:
        loaded = client.llm.model(NOT_LOADED_LLM).get_load_config().to_dict()
    assert {key: loaded.get(key) for key in LOAD_CONFIG} == LOAD_CONFIG
    assert loaded["gpu"]["ratio"] == 0.5
    assert f"KV {Q8_KV_BYTES_PER_TOKEN:,} bytes/token" in worker.log_tail(300)
    done = send(client_app(redis_url), CompletionJob(model=NOT_LOADED_LLM, prompt="hi",
                                                     config={"max_tokens": 2}))
    assert done.get(timeout=30)["stats"]["predicted_tokens_count"] == 2


@pytest.mark.parametrize(("load_config", "named"), [
    ('{"flashAtention": true}', "unknown key 'flashAtention' for an LLM"),
    ('{"evalBatchSize": 0}', "Expected `int` >= 1 - at `$.evalBatchSize`"),
])
def test_a_wrong_key_fails_the_start_with_one_line(
        load_config: str, named: str, lmq_env: dict[str, str],
        worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory(NOT_LOADED_LLM, {**lmq_env, "LMQ_LOAD_CONFIG": load_config},
                            wait_ready=False)
    assert worker.process is not None
    wait_until(lambda: not worker.is_running(), timeout=60,
               message=lambda: f"the worker to exit; log:\n{worker.log_tail()}")
    assert worker.process.returncode == EXIT_CONFIG, worker.log_tail()
    log = worker.log_tail(200)
    errors = [line for line in log.splitlines() if "ERROR/MainProcess" in line]
    assert len(errors) == 1 and named in errors[0], log
    assert "LMQ_LOAD_CONFIG" in errors[0] and "Traceback" not in log
