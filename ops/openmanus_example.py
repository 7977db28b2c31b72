#!/usr/bin/env python
"""Run an OpenManus ToolCallAgent with a trivial `echo` tool on LM Studio.

    ops/openmanus_example.py                       # direct to LM Studio (LMQ_LMSTUDIO_HOST)
    ops/openmanus_example.py --queued              # through the pool (workers must be up)
    ops/openmanus_example.py --simulator           # embedded simulator instead of LM Studio
    ops/openmanus_example.py --simulator --queued  # ... plus a private Redis and one worker
    ops/openmanus_example.py --queued --background # first step submitted, collected by job id

Needs OpenManus (ops/setup installs openmanus==0.1.0). The model defaults to OpenManus'
config.toml `[llm] model`, then LMQ_MODEL; --model overrides both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from producers.openmanus import (  # noqa: E402
    collect_step,
    finish_step,
    submit_step,
    use_lmstudio,
)
from producers.openmanus.example_agent import echo_agent, echo_tool  # noqa: E402
from workers.settings import Settings, get_settings  # noqa: E402

SIM_MODEL = "llama-3.2-1b-instruct"
REQUEST = "Please echo 'hello from OpenManus' back to me, then stop."


@contextlib.contextmanager
def embedded(queued: bool, model: str) -> Iterator[Settings]:
    """A simulator (and, for --queued, a private Redis with one worker) for this run."""
    from producers.local_pool import local_pool
    from producers.redis_server import RedisServer
    from simulator.testing import running_simulator

    with running_simulator() as sim:
        if not queued:
            yield Settings(lmstudio_host=sim.host)
            return
        redis = RedisServer().start()
        try:
            with local_pool(redis.url, sim.host, [model]) as pool:
                yield pool.settings
        finally:
            redis.stop()


async def run(settings: Settings, args: argparse.Namespace) -> None:
    provider = use_lmstudio(args.model, queued=args.queued, settings=settings)
    agent = echo_agent()  # built after use_lmstudio: it takes the provider from the registry
    if args.background:
        await background_step(agent, args)
    summary = await agent.run(None if args.background else REQUEST)
    print("\n--- agent summary ---\n" + summary)
    print(f"echo tool calls: {echo_tool(agent).calls}")
    for record in provider.stats_log:
        stats = record.stats
        print(f"  job={record.job_id or '-'} stop={stats and stats.stop_reason} "
              f"prompt={stats and stats.prompt_tokens_count} "
              f"predicted={stats and stats.predicted_tokens_count}")
    provider.close()


async def background_step(agent, args: argparse.Namespace) -> None:
    if not args.queued:
        raise SystemExit("--background needs --queued (a step is a job on the pool)")
    agent.update_memory("user", REQUEST)
    job_id = await submit_step(agent)
    print(f"submitted the first step as job {job_id}; doing other work meanwhile...")
    message = await collect_step(job_id, timeout=300)  # could be another process, later
    print(f"collected step: {await finish_step(agent, message)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", action="store_true", help="go through the worker pool")
    parser.add_argument("--simulator", action="store_true", help="embedded simulator")
    parser.add_argument("--background", action="store_true", help="submit/collect a step")
    parser.add_argument("--model", default=None, help="LM Studio model key")
    args = parser.parse_args()
    if args.simulator:
        args.model = args.model or SIM_MODEL
        with embedded(args.queued, args.model) as settings:
            asyncio.run(run(settings, args))
    else:
        asyncio.run(run(get_settings(), args))


if __name__ == "__main__":
    main()
