"""The pool's metrics, scraped over HTTP (Flower's /metrics and `lmq metrics serve`) and
checked against the jobs that ran on real workers against the simulator."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from producers.flower_process import free_port
from tests.e2e.support import (
    EMBED_MODEL,
    MODEL,
    cancels_sent,
    flower_env,
    job_queue,
    long_replies,
    scrape,
    start_flower,
    wait_backend_state,
)
from tests.support.wait import wait_until
from workers.metrics import read_model_metrics

pytestmark = pytest.mark.slow


@pytest.fixture()
def exporter(lmq_env: dict[str, str]) -> Iterator[str]:
    """`lmq metrics serve` as a subprocess; yields its /metrics URL."""
    port = free_port()
    process = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "lmq"), "metrics", "serve",
         "--port", str(port), "--address", "127.0.0.1"],
        env={**os.environ, **lmq_env}, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: _answers(url), timeout=20, message="lmq metrics serve")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _answers(url: str) -> bool:
    try:
        scrape(url)
        return True
    except Exception:
        return False


def test_counts_and_stats_match_the_jobs_that_ran(lmq_env, simulator, worker_factory, flowers,
                                                  exporter):
    env = flower_env(lmq_env)
    worker_factory(MODEL, env)
    flower = start_flower(env, flowers)
    queue = job_queue(env)

    results = [queue.chat(MODEL, f"Hello {i}").result(timeout=60) for i in range(3)]
    failed = queue.chat(MODEL, "word " * 40_000)  # over the context length: a bad job
    wait_backend_state(failed, {"FAILURE"})
    long_replies(simulator)
    cancelled = queue.chat(MODEL, "A long story please")
    wait_backend_state(cancelled, {"PROGRESS"})
    cancelled.cancel()
    wait_until(lambda: cancels_sent(simulator), timeout=20)
    wait_backend_state(cancelled, {"REVOKED"})
    waiting = [queue.embed(EMBED_MODEL, "no worker serves me", enqueue_anyway=True)
               for _ in range(2)]

    labels = f'model="{MODEL}"'
    for url in (f"{flower.url}/metrics", exporter):
        values = wait_until(lambda u=url: _settled(u, labels), timeout=20,
                            message=lambda u=url: f"settled metrics at {u}: {scrape(u)}")
        assert values[f'lmq_jobs_finished_total{{{labels},outcome="succeeded"}}'] == 3
        assert values[f'lmq_jobs_finished_total{{{labels},outcome="failed"}}'] == 1
        assert values[f'lmq_jobs_finished_total{{{labels},outcome="cancelled"}}'] == 1
        assert values[f"lmq_jobs_running{{{labels}}}"] == 0
        assert values[f'lmq_jobs_queued{{model="{EMBED_MODEL}"}}'] == len(waiting)
        ttft = sum(r.stats.time_to_first_token_s for r in results)
        assert values[f"lmq_time_to_first_token_seconds_count{{{labels}}}"] == 3
        assert values[f"lmq_time_to_first_token_seconds_sum{{{labels}}}"] == pytest.approx(ttft)
        waits = sum(r.timing.queue_wait_s for r in results)
        assert values[f"lmq_queue_wait_seconds_sum{{{labels}}}"] == pytest.approx(waits)
        predicted = sum(r.stats.predicted_tokens_count for r in results)
        assert values[f"lmq_predicted_tokens_total{{{labels}}}"] == predicted
        assert any(k.startswith("flower_") for k in scrape(url)) == (url != exporter)
        group = [k for k in values if k.startswith("lmq_gpu_budget_bytes{")]
        assert group and values[group[0]] > 0

    model = read_model_metrics(env["LMQ_BROKER_URL"])[MODEL]
    assert (model["succeeded"], model["failed"], model["cancelled"]) == (3, 1, 1)


def test_running_jobs_are_counted_while_they_run(lmq_env, simulator, worker_factory, exporter):
    worker_factory(MODEL, lmq_env)
    long_replies(simulator)
    queue = job_queue(lmq_env)
    handles = [queue.chat(MODEL, f"story {i}") for i in range(2)]
    for handle in handles:
        wait_backend_state(handle, {"PROGRESS"})
    running = f'lmq_jobs_running{{model="{MODEL}"}}'
    wait_until(lambda: scrape(exporter).get(running) == 2, timeout=10,
               message=lambda: f"{running} == 2: {scrape(exporter).get(running)}")
    for handle in handles:
        handle.cancel()
    wait_until(lambda: scrape(exporter).get(running) == 0, timeout=20)


def _settled(url: str, labels: str) -> dict[str, float] | None:
    values = scrape(url)
    done = values.get(f'lmq_jobs_finished_total{{{labels},outcome="cancelled"}}', 0)
    return values if done == 1 else None


def test_every_lmq_series_the_dashboard_uses_is_exported(lmq_env, worker_factory, exporter):
    import json
    import re

    from producers.flower_process import PROJECT_ROOT

    worker_factory(MODEL, lmq_env)
    job_queue(lmq_env).chat(MODEL, "Hello").result(timeout=60)
    dashboard = json.loads((PROJECT_ROOT / "ops" / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\blmq_[a-z_]+", target["expr"])}
    exported = {series.split("{")[0] for series in scrape(exporter)}
    assert used and used <= exported, used - exported
