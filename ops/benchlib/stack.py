"""The parts every benchmark section runs on: a private redis-server and the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producers.redis_server import RedisServer
from simulator.testing import RunningSimulator, running_simulator

ROOT = Path(__file__).resolve().parents[2]
CHAT = "llama-3.2-1b-instruct"
EMBED = "text-embedding-nomic-embed-text-v1.5"
# Fast, short replies: what is measured is the queue, not the simulated GPU.
FAST_TIMING = {"prefill_tokens_per_s": 0, "decode_tokens_per_s": 1000.0,
               "reply_min_tokens": 16, "reply_max_tokens": 16, "embedding_latency_s": 0.0}


@dataclass
class Stack:
    redis: RedisServer
    sim: RunningSimulator

    @property
    def redis_url(self) -> str:
        return self.redis.url

    @property
    def host(self) -> str:
        return self.sim.host

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.redis.url).flushdb()  # our own private server


@contextmanager
def stack(timing: dict[str, Any] | None = None, **config: Any) -> Iterator[Stack]:
    sim_config = {"timing": {**FAST_TIMING, **(timing or {})}, **config}
    with RedisServer() as server, running_simulator(sim_config, in_process=False) as sim:
        yield Stack(server, sim)
