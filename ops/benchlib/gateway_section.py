"""The gateway (`lmq serve`, its own process) vs `JobQueue` at the same concurrency; its
streaming time to first content vs the job's time to first token; a 10,000-line batch file
uploaded and accepted. Reuses `ops/bench_gateway.py`."""

from __future__ import annotations

from typing import Any

from ops import bench_gateway
from ops.benchlib.figure import Figure
from ops.benchlib.stack import CHAT, stack
from producers.local_pool import local_pool


def measure(jobs: int, concurrency: int, batch_lines: int, say: Any,
            rounds: int = 4, stream_requests: int = 20) -> list[Figure]:
    env = {"LMQ_CONCURRENCY": str(concurrency), "LMQ_SLOTS": str(concurrency)}
    timing = {**bench_gateway.TIMING, "parallel_slots": concurrency}
    with stack(timing) as parts, \
            local_pool(parts.redis_url, parts.host, [CHAT], extra_env=env) as pool, \
            bench_gateway.gateway_process(parts.redis_url) as base_url, \
            bench_gateway.floor_process() as floor_url:
        say(f"gateway vs JobQueue: {jobs} chat jobs, concurrency {concurrency}, "
            f"{rounds} alternating rounds, with the HTTP floor")
        chat = bench_gateway.compare(pool.queue, base_url, floor_url, jobs, concurrency,
                                     rounds)
        say("gateway rounds: jobs/s " + _each(chat["rounds"]["gateway"]) + " vs "
            + _each(chat["rounds"]["queue"]) + "; added p50 ms "
            + _each(chat["rounds"]["added_ms"]) + "; HTTP floor added p50 ms "
            + _each(chat["rounds"]["floor_added_ms"]) + ", throughput "
            + _each(chat["rounds"]["floor_ratio"], 3) + "; load average "
            + _each(chat["load"]))
        say(f"gateway streaming: {stream_requests} requests, first content vs job TTFT")
        stream = bench_gateway.streaming(base_url, pool.queue, stream_requests)
        say(f"gateway batch: {batch_lines}-line file uploaded and accepted")
        accept_s = bench_gateway.batch_accept_s(base_url, batch_lines)
    section = f"gateway ({concurrency} concurrent)"
    added_ms = chat["added_ms"]
    spread = _each(sorted(chat["rounds"]["added_ms"]))
    floor_ms = chat["floor_added_ms"]
    return [
        Figure(section, f"chat throughput, {jobs} jobs, openai async client", "jobs/s",
               chat["gateway"], chat["queue"],
               f"JobQueue.achat + aresult (ratio: median of {rounds} alternating rounds)",
               goal=">= 0.95x", paired_ratio=chat["ratio"]),
        Figure(section, "chat latency p50 (added by the gateway: "
               f"{added_ms:+.1f} ms, median of {rounds} rounds' differences: {spread}; "
               "goal < 5 ms)", "ms", chat["p50_gateway_ms"], chat["p50_queue_ms"],
               "JobQueue.achat + aresult", higher_is_better=False,
               notes={"added_p50_ms": added_ms, "added_p50_ms_rounds": chat["rounds"]["added_ms"],
                      "load_average": chat["load"]}),
        # The floor: the openai client and uvicorn + FastAPI alone, a server that only waits
        # as long as a job takes. What the gateway adds beyond it is its own.
        Figure(section, "HTTP floor: openai client to a server that only waits, throughput",
               "x", chat["floor_ratio"], 1.0,
               "the same waits in-process (ratio: median of the rounds'; any gateway's "
               f"ceiling here; gateway {chat['ratio']:.2f}x)", peer_is_goal=True,
               paired_ratio=chat["floor_ratio"]),
        Figure(section, f"HTTP floor: added p50 ({floor_ms:+.1f} ms, rounds "
               f"{_each(sorted(chat['rounds']['floor_added_ms']))}; the gateway's own share "
               f"beyond it: {added_ms - floor_ms:+.1f} ms)", "ms", floor_ms, 5.0,
               "the gateway's goal", higher_is_better=False, peer_is_goal=True,
               notes={"floor_added_p50_ms_rounds": chat["rounds"]["floor_added_ms"],
                      "gateway_beyond_floor_ms": added_ms - floor_ms}),
        Figure(section, f"stream: time to first content, median of {stream_requests}",
               "ms", stream["gateway_ms"], stream["job_ms"],
               "the job's queue wait + time to first token", higher_is_better=False),
        Figure(section, f"stream: time to first content, median of {stream_requests}", "ms",
               stream["gateway_ms"], stream["queue_stream_ms"],
               "JobHandle.astream() first text (same fragment stream, no HTTP)",
               higher_is_better=False),
        Figure(section, f"{batch_lines:,}-line batch file uploaded and accepted", "s",
               accept_s, 10.0, "goal", higher_is_better=False, goal="< 10 s",
               peer_is_goal=True),
    ]


def _each(values: Any, decimals: int = 1) -> str:
    return ", ".join(f"{value:.{decimals}f}" for value in values)
