"""Fault injection and the admin API: drops, failures, delays, restarts, the log."""

from __future__ import annotations

import time

import httpx
import lmstudio as lms
import pytest

from simulator.testing import RunningSimulator, running_simulator
from tests.simulator.conftest import LLM_KEY

pytestmark = pytest.mark.timeout(30)


def test_dropped_connection_is_websocket_error(simulator: RunningSimulator) -> None:
    simulator.admin.set_faults(drop_after_fragments=2, drop_times=1)
    with lms.Client(simulator.host) as client:
        model = client.llm.model(LLM_KEY)
        with pytest.raises(lms.LMStudioWebsocketError):
            model.respond("doomed")
    assert simulator.admin.channels()[-1]["fragments"] == 2
    assert simulator.admin.log(type="connectionDropped")
    with lms.Client(simulator.host) as client:  # the server itself is fine
        assert client.llm.model(LLM_KEY).respond("fine").content


def test_fail_nth_request(client: lms.Client, simulator: RunningSimulator) -> None:
    model = client.llm.model(LLM_KEY)
    simulator.admin.fail_nth("countTokens", 2, title="Injected boom")
    assert model.count_tokens("a b") == 2
    with pytest.raises(lms.LMStudioServerError, match="Injected boom"):
        model.count_tokens("a b")
    assert model.count_tokens("a b") == 2
    simulator.admin.fail_nth("predict", 1)
    with pytest.raises(lms.LMStudioServerError, match="Simulated failure"):
        model.respond("hi")


def test_delay_applies_to_chosen_endpoints(client: lms.Client, simulator: RunningSimulator) -> None:
    model = client.llm.model(LLM_KEY)
    simulator.admin.set_faults(delay_s=0.5, delay_endpoints=["tokenize"])
    started = time.monotonic()
    model.count_tokens("fast")
    fast_s = time.monotonic() - started
    started = time.monotonic()
    model.tokenize("slow")
    slow_s = time.monotonic() - started
    assert slow_s >= 0.5 and slow_s > fast_s


def test_admin_restart_drops_clients_then_serves_again(simulator: RunningSimulator) -> None:
    with lms.Client(simulator.host) as client:
        model = client.llm.model(LLM_KEY)
        simulator.admin.restart(down_s=1.0)
        simulator.admin.wait_until(lambda: not _reachable(simulator))
        with pytest.raises(lms.LMStudioWebsocketError):
            model.respond("hi")
    simulator.admin.wait_ready()
    with lms.Client(simulator.host) as client:
        assert client.llm.model(LLM_KEY).respond("back").content


def _reachable(sim: RunningSimulator) -> bool:
    try:
        sim.admin.health()
    except httpx.HTTPError:
        return False
    return True


def test_stop_and_restart_from_the_handle(simulator: RunningSimulator) -> None:
    simulator.stop()
    with pytest.raises(lms.LMStudioClientError, match="not reachable"), lms.Client(simulator.host):
        pass
    simulator.restart()
    with lms.Client(simulator.host) as client:
        assert client.llm.list_loaded()


def test_log_since_and_clear(client: lms.Client, simulator: RunningSimulator) -> None:
    model = client.llm.model(LLM_KEY)
    model.count_tokens("one")
    mark = simulator.admin.clear_log()
    assert simulator.admin.log() == []
    model.count_tokens("two")
    calls = simulator.admin.log(type="rpcCall", since=mark)
    assert [c["msg"]["parameter"]["inputString"] for c in calls] == ["two"]
    last_seq = simulator.admin.log()[-1]["seq"]
    model.count_tokens("three")
    newer = simulator.admin.log(since_seq=last_seq, type="rpcCall")
    assert [c["msg"]["parameter"]["inputString"] for c in newer] == ["three"]


@pytest.mark.timeout(60)
def test_subprocess_mode_and_respawn_on_the_same_port() -> None:
    with running_simulator({"timing": {"decode_tokens_per_s": 0}}, in_process=False) as sim:
        with lms.Client(sim.host) as client:
            assert client.llm.model(LLM_KEY).respond("hi").content
        port = sim.port
        sim.restart()  # terminate + `python -m simulator --port <same>`
        assert sim.port == port
        with lms.Client(sim.host) as client:
            assert client.llm.list_loaded()
