"""An in-process simulator leaves no task pending on its loop when it is closed."""

from __future__ import annotations

import asyncio

import lmstudio as lms

from simulator.testing import running_simulator
from tests.simulator.conftest import BIG_LLM_KEY


def test_close_cancels_an_idle_ttl_timer() -> None:
    with running_simulator() as sim:
        with lms.Client(sim.host) as client:
            client.llm.model(BIG_LLM_KEY, ttl=3600)  # loaded with a TTL: its timer waits
        loop = sim._runner.loop  # type: ignore[attr-defined]
        pending = asyncio.run_coroutine_threadsafe(_tasks(), loop).result(5)
        assert any("_expire" in name for name in pending), pending
    assert asyncio.all_tasks(loop) == set()


async def _tasks() -> list[str]:
    return [repr(task.get_coro()) for task in asyncio.all_tasks()
            if task is not asyncio.current_task()]
