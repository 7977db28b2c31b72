"""Streaming, cancellation, slots and concurrency (synchronised on the server log)."""

from __future__ import annotations

import threading
import time

import lmstudio as lms
import pytest

from simulator.testing import RunningSimulator
from tests.simulator.conftest import LLM_KEY

pytestmark = pytest.mark.timeout(30)


def _channel(sim: RunningSimulator, endpoint: str = "predict") -> dict:
    return sim.admin.wait_until(
        lambda: next((c for c in sim.admin.channels() if c["endpoint"] == endpoint), None))


def test_streaming_fragments(client: lms.Client) -> None:
    model = client.llm.model(LLM_KEY)
    progress: list[float] = []
    stream = model.respond_stream("Stream please", on_prompt_processing_progress=progress.append)
    fragments = [f.content for f in stream]
    result = stream.result()
    assert len(fragments) == result.stats.predicted_tokens_count > 1
    assert "".join(fragments) == result.content
    assert progress and progress[-1] == 1.0


def test_cancel_mid_stream(simulator: RunningSimulator, client: lms.Client) -> None:
    simulator.admin.set_faults(reply_tokens=2000)  # ~10 s at 200 tok/s
    model = client.llm.model(LLM_KEY)
    stream = model.respond_stream("A very long story")
    received = []
    started = time.monotonic()
    for fragment in stream:
        received.append(fragment.content)
        if len(received) == 3:
            stream.cancel()
    result = stream.result()
    assert time.monotonic() - started < 5
    assert result.stats.stop_reason == "userStopped"
    assert result.content == "".join(received[:3])
    channel = _channel(simulator)
    assert channel["cancel_t"] is not None
    assert channel["fragments_after_cancel"] == 0
    assert channel["stop_reason"] == "userStopped"
    cancels = simulator.admin.log(type="channelSend:cancel")
    assert len(cancels) == 1 and cancels[0]["t"] == pytest.approx(channel["cancel_t"], abs=0.5)


def test_cancel_during_prefill(simulator: RunningSimulator, client: lms.Client) -> None:
    simulator.admin.set_faults(slow_prefill_s=20)
    model = client.llm.model(LLM_KEY)
    stream = model.respond_stream("Slow to start")
    stream.start()
    _channel(simulator)
    started = time.monotonic()
    stream.cancel()
    assert list(stream) == []
    result = stream.result()
    assert time.monotonic() - started < 5
    assert result.stats.stop_reason == "userStopped"
    assert result.content == ""
    assert simulator.admin.channels()[0]["fragments"] == 0


def test_sixteen_threads_share_one_client(client: lms.Client) -> None:
    client.llm.list_loaded()  # warm the namespace from one thread (SDK connect race)
    model = client.llm.model(LLM_KEY)
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = model.respond(f"Thread {i} asks").content
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(25)
    assert not errors and len(results) == 16
    assert results[5] == model.respond("Thread 5 asks").content


def test_predictions_beyond_slots_wait(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    # 100 tokens at 200 tok/s: long enough that all three are queued even on a busy box
    sim = simulator_factory({"timing": {"parallel_slots": 2}, "faults": {"reply_tokens": 100}})
    with lms.Client(sim.host) as client:
        client.llm.list_loaded()
        model = client.llm.model(LLM_KEY)
        threads = [threading.Thread(target=model.respond, args=(f"p{i}",)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    channels = sorted((c for c in sim.admin.channels() if c["endpoint"] == "predict"),
                      key=lambda c: c["slot_acquired_t"])
    assert len(channels) == 3
    first_done = min(c["last_fragment_t"] for c in channels[:2])
    late = channels[2]
    assert late["slot_acquired_t"] >= first_done
    assert late["slot_acquired_t"] - late["slot_wait_start_t"] > 0.05
    for early in channels[:2]:
        assert early["slot_acquired_t"] - early["slot_wait_start_t"] < 0.05


def test_closing_the_socket_stops_in_flight_work(simulator: RunningSimulator) -> None:
    simulator.admin.set_faults(reply_tokens=5000)
    client = lms.Client(simulator.host)
    stream = client.llm.model(LLM_KEY).respond_stream("never finished")
    for i, _ in enumerate(stream):
        if i == 2:
            break
    client.close()
    closed = simulator.admin.wait_until(
        lambda: simulator.admin.log(type="connectionClosed"))[0]
    simulator.admin.wait_until(
        lambda: all(i["slotsInUse"] == 0 for i in simulator.admin.state()["instances"]))
    channel = _channel(simulator)
    assert channel["last_fragment_t"] <= closed["t"]
    assert channel["fragments"] < 5000 and channel["stop_reason"] is None


def test_unloading_a_model_stops_its_predictions(simulator: RunningSimulator,
                                                 client: lms.Client) -> None:
    simulator.admin.set_faults(reply_tokens=5000)
    model = client.llm.load_new_instance(LLM_KEY, "doomed")
    stream = model.respond_stream("long")
    for i, _ in enumerate(stream):
        if i == 1:
            client.llm.unload("doomed")
    assert stream.result().stats.stop_reason == "modelUnloaded"


# The SDK complains when the abandoned streams' generators are collected after close().
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_queued_prediction_of_a_closed_socket_frees_its_place(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    sim = simulator_factory({"timing": {"parallel_slots": 1}, "faults": {"reply_tokens": 5000}})
    busy = lms.Client(sim.host)
    first = busy.llm.model(LLM_KEY).respond_stream("hog the slot")
    next(iter(first))
    queued = lms.Client(sim.host)
    second = queued.llm.model(LLM_KEY).respond_stream("wait in line")
    second.start()
    sim.admin.wait_until(lambda: sim.admin.state()["instances"][0]["slotsWaiting"] == 1)
    queued.close()
    busy.close()
    sim.admin.wait_until(lambda: sim.admin.state()["instances"][0]["slotsInUse"] == 0)
    with lms.Client(sim.host) as client:
        sim.admin.set_faults(reply_tokens=3)
        assert client.llm.model(LLM_KEY).respond("free again").stats.predicted_tokens_count == 3


def test_cancel_lag_fault_sends_fragments_after_cancel(simulator: RunningSimulator,
                                                       client: lms.Client) -> None:
    simulator.admin.set_faults(reply_tokens=2000, cancel_lag_fragments=3)
    stream = client.llm.model(LLM_KEY).respond_stream("sluggish")
    received = []
    for fragment in stream:
        received.append(fragment.content)
        if len(received) == 2:
            stream.cancel()
    result = stream.result()
    assert result.stats.stop_reason == "userStopped"
    assert result.content.startswith("".join(received[:2]))
    channel = _channel(simulator)
    assert channel["fragments_after_cancel"] == 3
    assert all(t >= channel["cancel_t"] for t in channel["fragments_after_cancel_t"])
