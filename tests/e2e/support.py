"""Helpers shared by the Flower and metrics tests (integration and browser)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from producers.flower_process import FlowerProcess
from tests.support.wait import wait_until

MODEL = "llama-3.2-1b-instruct"
EMBED_MODEL = "text-embedding-nomic-embed-text-v1.5"
AUTH = ("admin", "s3cret-pass")


def flower_env(lmq_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**lmq_env, "LMQ_FLOWER_BASIC_AUTH": f"{AUTH[0]}:{AUTH[1]}", **extra}


def job_queue(env: dict[str, str]) -> Any:
    """A JobQueue for the test's Redis (settings built from `env`, not os.environ)."""
    from producers import JobQueue
    from workers.settings import Settings

    return JobQueue(Settings(broker_url=env["LMQ_BROKER_URL"],
                             result_backend=env["LMQ_RESULT_BACKEND"]))


def flower_task(flower: FlowerProcess, job_id: str) -> dict[str, Any] | None:
    """The task as Flower's API knows it (None until Flower saw an event of it)."""
    response = httpx.get(f"{flower.url}/api/task/info/{job_id}", auth=AUTH, timeout=5)
    return response.json() if response.status_code == 200 else None


def wait_flower_state(flower: FlowerProcess, job_id: str, wanted: set[str],
                      timeout: float = 30) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        task = flower_task(flower, job_id)
        return task if task and task.get("state") in wanted else None

    return wait_until(seen, timeout=timeout, interval=0.1,
                      message=lambda: f"Flower state {wanted} of {job_id}: "
                      f"{flower_task(flower, job_id)}; log:\n{flower.log_tail()}")


def wait_flower_sees_events(flower: FlowerProcess, timeout: float = 30) -> None:
    """Until Flower's event consumer has received a worker's event (it lists workers from
    events only): events are broadcast, and those sent before it subscribed never reach it.
    Workers send a heartbeat every 2 s, so a running worker is listed within seconds."""
    def listed() -> bool:
        reply = httpx.get(f"{flower.url}/workers?json=1", auth=AUTH, timeout=5)
        return reply.status_code == 200 and bool(reply.json().get("data"))

    wait_until(listed, timeout=timeout, interval=0.2,
               message=lambda: f"Flower receiving worker events (is a worker running?); "
               f"log:\n{flower.log_tail()}")


def wait_backend_state(handle: Any, wanted: set[str], timeout: float = 30) -> str:
    return wait_until(lambda: handle.status() if handle.status() in wanted else None,
                      timeout=timeout, interval=0.05,
                      message=lambda: f"backend state {wanted}, got {handle.status()}")


def cancels_sent(simulator: Any) -> list[dict[str, Any]]:
    """Cancel messages the simulator received from clients."""
    return [e for e in simulator.admin.log(type="channelSend:cancel") if e.get("dir") == "in"]


def long_replies(simulator: Any, tokens: int = 4000, tokens_per_s: float = 40) -> None:
    """Make predictions slow enough to cancel mid-stream."""
    simulator.admin.set_faults(reply_tokens=tokens)
    simulator.admin.set_timing(decode_tokens_per_s=tokens_per_s)


def scrape(url: str) -> dict[str, float]:
    """Prometheus text from `url` as {series{labels}: value}."""
    text = httpx.get(url, timeout=10).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def start_flower(env: dict[str, str], started: list[FlowerProcess], *,
                 wait_for_worker_events: bool = True) -> FlowerProcess:
    """Start Flower (appended to `started` for the caller to stop) and, by default, wait
    until it receives the pool's worker events: Flower subscribes only after its HTTP
    server answers, so a fast job run right after start-up could be missing from it.
    Pass `wait_for_worker_events=False` when no worker runs (none would ever be listed)."""
    flower = FlowerProcess(env)
    started.append(flower)
    flower.start()
    if wait_for_worker_events:
        wait_flower_sees_events(flower)
    return flower


StopAll = Callable[[], None]
