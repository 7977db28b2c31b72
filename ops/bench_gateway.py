#!/usr/bin/env python
"""The gateway (`lmq serve`) against `JobQueue`, the Python API it is built on.

    .venv/bin/python ops/bench_gateway.py [--jobs 200] [--concurrency 4] [--rounds 4]

(a) chat jobs/s and per-request latency through the gateway with the `openai` async client
    vs `JobQueue.achat` + `aresult` at the same concurrency, in alternating rounds (goals:
    >= 0.95x throughput, < 5 ms added p50 latency); in the same rounds, the HTTP floor:
    the `openai` client against a uvicorn + FastAPI server that only waits as long as a
    job takes vs that wait in-process (`ops.benchlib.http_floor`), what the client and
    server stack alone add on this machine;
(b) streaming: the client's time to the first content chunk vs the job's own time to first
    token (queue wait + LM Studio's time to first token, from the same request's lmq_stats),
    and vs `JobHandle.astream()`'s first text (the same fragment stream, without HTTP);
(c) a 10,000-line batch file uploaded (/v1/files, every line validated) and accepted
    (/v1/batches returns `validating`; accepted when the gateway's background step has
    checked and enqueued every line and the batch is `in_progress`): goal < 10 s.

The gateway runs as its own process (`lmq serve`, as deployed), the pool as real workers,
LM Studio as the simulator; `ops/bench` runs this as its `gateway` section.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import openai  # noqa: E402

from producers.job_queue import JobQueue  # noqa: E402

CHAT = "llama-3.2-1b-instruct"
MAX_TOKENS = 16
TIMING = {"prefill_tokens_per_s": 5000.0, "decode_tokens_per_s": 200.0,
          "reply_min_tokens": MAX_TOKENS, "reply_max_tokens": MAX_TOKENS}
LMQ = str(Path(sys.executable).with_name("lmq"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def gateway_process(redis_url: str, timeout_s: float = 60) -> Iterator[str]:
    """`lmq serve` on a free loopback port (no keys: 127.0.0.1); yields its /v1 URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMQ_")}
    env.update(LMQ_BROKER_URL=redis_url, LMQ_RESULT_BACKEND=redis_url)
    with _serving("lmq serve", [LMQ, "serve", "--port"], env, timeout_s) as url:
        yield url


@contextmanager
def floor_process(timeout_s: float = 60) -> Iterator[str]:
    """The HTTP floor's server (`ops.benchlib.http_floor`) under uvicorn as `lmq serve` runs
    (log level info: an access line per request) on a free loopback port; its /v1 URL."""
    argv = [sys.executable, "-m", "uvicorn", "ops.benchlib.http_floor:app", "--host",
            "127.0.0.1", "--log-level", "info", "--port"]
    with _serving("the HTTP floor server", argv, dict(os.environ), timeout_s) as url:
        yield url


@contextmanager
def _serving(name: str, argv: list[str], env: dict[str, str],
             timeout_s: float) -> Iterator[str]:
    """Run `argv` + a free port until its /health answers; yield its /v1 URL; stop it."""
    port = _free_port()
    proc = subprocess.Popen([*argv, str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start (exit {proc.poll()})")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def prompts(n: int) -> list[str]:
    return [f"Short question number {i}?" for i in range(n)]


async def _bounded(calls: list[Any], concurrency: int) -> tuple[float, list[float]]:
    """Run the coroutine factories `calls` `concurrency` at a time: (jobs/s, latencies s)."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(call: Any) -> None:
        async with gate:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(one(call) for call in calls))
    return len(calls) / (time.perf_counter() - start), latencies


async def through_queue(queue: JobQueue, texts: list[str],
                        concurrency: int) -> tuple[float, list[float]]:
    async def call(text: str) -> None:
        handle = await queue.achat(CHAT, text, config={"maxTokens": MAX_TOKENS})
        await handle.aresult(120)

    return await _bounded([lambda t=t: call(t) for t in texts], concurrency)


async def through_gateway(base_url: str, texts: list[str],
                          concurrency: int) -> tuple[float, list[float]]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0) as client:
        async def call(text: str) -> None:
            await client.chat.completions.create(
                model=CHAT, max_tokens=MAX_TOKENS,
                messages=[{"role": "user", "content": text}])

        return await _bounded([lambda t=t: call(t) for t in texts], concurrency)


async def through_floor(floor_url: str, jobs: int, concurrency: int,
                        delay_s: float) -> tuple[float, list[float]]:
    """The `openai` client against the HTTP floor server (`ops.benchlib.http_floor`), which
    answers each request after `delay_s`: the client and server stack, no gateway."""
    async with openai.AsyncOpenAI(base_url=floor_url, api_key="bench", max_retries=0) as client:
        async def call() -> None:
            await client.chat.completions.create(
                model=CHAT, max_tokens=MAX_TOKENS, extra_query={"delay_ms": 1000 * delay_s},
                messages=[{"role": "user", "content": "Short question?"}])

        return await _bounded([call] * jobs, concurrency)


async def in_process_sleep(jobs: int, concurrency: int,
                           delay_s: float) -> tuple[float, list[float]]:
    """The floor's peer: the same waits, in this process, without HTTP."""
    return await _bounded([lambda: asyncio.sleep(delay_s)] * jobs, concurrency)


def compare(queue: JobQueue, base_url: str, floor_url: str, jobs: int, concurrency: int,
            rounds: int) -> dict[str, Any]:
    """Alternating rounds, each arm going first in every other round (so a drift of the
    machine's load favours neither); the throughput ratio is the median of the rounds'
    ratios and the added p50 the median of the rounds' p50 differences, each a same-round
    comparison.

    Each round also measures the HTTP floor (`floor_url`): the `openai` client against
    a server that only waits as long as a job takes (the warm-up's JobQueue p50) vs the
    same wait in this process: what the client and uvicorn + FastAPI add on this machine
    before any gateway work."""
    texts = prompts(jobs)
    asyncio.run(through_gateway(base_url, texts[:concurrency * 2], concurrency))  # warm up
    _, warm = asyncio.run(through_queue(queue, texts[:concurrency * 4], concurrency))
    job_s = statistics.median(warm)
    asyncio.run(through_floor(floor_url, concurrency * 2, concurrency, job_s))  # warm up
    rows: dict[str, list[float]] = {"gateway": [], "queue": [], "ratio": [], "added_ms": [],
                                    "p50_gateway_ms": [], "p50_queue_ms": [],
                                    "floor_ratio": [], "floor_added_ms": []}
    for number in range(rounds):
        arms = [("gateway", lambda: through_gateway(base_url, texts, concurrency)),
                ("queue", lambda: through_queue(queue, texts, concurrency)),
                ("floor", lambda: through_floor(floor_url, jobs, concurrency, job_s)),
                ("sleep", lambda: in_process_sleep(jobs, concurrency, job_s))]
        measured = {name: asyncio.run(run()) for name, run in
                    (arms if number % 2 == 0 else arms[::-1])}
        (gw_rate, gw_lat), (q_rate, q_lat) = measured["gateway"], measured["queue"]
        p50_gw, p50_q = 1000 * statistics.median(gw_lat), 1000 * statistics.median(q_lat)
        rows["gateway"].append(gw_rate)
        rows["queue"].append(q_rate)
        rows["ratio"].append(gw_rate / q_rate)
        rows["p50_gateway_ms"].append(p50_gw)
        rows["p50_queue_ms"].append(p50_q)
        rows["added_ms"].append(p50_gw - p50_q)
        (f_rate, f_lat), (s_rate, s_lat) = measured["floor"], measured["sleep"]
        rows["floor_ratio"].append(f_rate / s_rate)
        rows["floor_added_ms"].append(1000 * (statistics.median(f_lat)
                                              - statistics.median(s_lat)))
    summary: dict[str, Any] = {name: statistics.median(values)
                               for name, values in rows.items()}
    summary["rounds"] = rows
    summary["load"] = os.getloadavg()
    return summary


async def _first_content(client: openai.AsyncOpenAI, text: str) -> tuple[float, float]:
    """(seconds to the first content chunk, the job's queue wait + time to first token)."""
    start = time.perf_counter()
    first = None
    stats: dict[str, Any] = {}
    stream = await client.chat.completions.create(
        model=CHAT, max_tokens=MAX_TOKENS, stream=True,
        messages=[{"role": "user", "content": text}])
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        extra = chunk.model_extra or {}
        if "lmq_stats" in extra:
            stats = extra["lmq_stats"]
    job = (stats["timing"]["queue_wait_s"] or 0) + stats["stats"]["time_to_first_token_s"]
    return first if first is not None else float("nan"), job


async def _queue_first_text(queue: JobQueue, text: str) -> float:
    start = time.perf_counter()
    handle = await queue.achat(CHAT, text, config={"maxTokens": MAX_TOKENS}, streamed=True)
    first = float("nan")
    async for piece in handle.astream():
        if piece and first != first:  # nan: nothing yet
            first = time.perf_counter() - start
    return first


def streaming(base_url: str, queue: JobQueue, requests: int) -> dict[str, float]:
    """Medians, ms: the gateway's first content chunk, the job's own queue wait + time to
    first token, and `JobHandle.astream()`'s first text for the same kind of request, sent
    as streamed as the gateway sends it (the worker publishes a streamed job's first
    fragment as it comes, the rest in 50 ms batches)."""
    async def run() -> tuple[list[tuple[float, float]], list[float]]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="bench",
                                      max_retries=0) as client:
            pairs, direct = [], []
            for i in range(requests):
                pairs.append(await _first_content(client, f"Stream question {i}"))
                direct.append(await _queue_first_text(queue, f"Stream question {i}"))
            return pairs, direct

    pairs, direct = asyncio.run(run())
    return {"gateway_ms": 1000 * statistics.median(p[0] for p in pairs),
            "job_ms": 1000 * statistics.median(p[1] for p in pairs),
            "queue_stream_ms": 1000 * statistics.median(direct)}


def batch_lines(n: int) -> bytes:
    return "".join(json.dumps({
        "custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": CHAT, "max_tokens": MAX_TOKENS,
                 "messages": [{"role": "user", "content": f"Question {i}?"}]}}) + "\n"
        for i in range(n)).encode()


def batch_accept_s(base_url: str, lines: int) -> float:
    """Upload a `lines`-line file and create its batch; the batch is cancelled afterwards."""
    content = batch_lines(lines)
    with openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0,
                       timeout=120) as client:
        start = time.perf_counter()
        source = client.files.create(file=("bench.jsonl", io.BytesIO(content)),
                                     purpose="batch")
        batch = client.batches.create(input_file_id=source.id, completion_window="24h",
                                      endpoint="/v1/chat/completions")
        while batch.status == "validating":  # accepted: every line checked and enqueued
            time.sleep(0.05)
            batch = client.batches.retrieve(batch.id)
        took = time.perf_counter() - start
        assert batch.status == "in_progress" and batch.request_counts.total == lines, batch
        client.batches.cancel(batch.id)
    return took


def main() -> None:
    import argparse

    from ops.benchlib.gateway_section import measure

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-lines", type=int, default=10_000)
    args = parser.parse_args()
    for figure in measure(args.jobs, args.concurrency, args.batch_lines, print,
                          rounds=args.rounds):
        print(figure.as_row())


if __name__ == "__main__":
    from ops.benchlib.entry import run

    raise SystemExit(run(main))
