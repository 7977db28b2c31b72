"""Histogram buckets of the pool metrics, on a real redis-server: a finished job increments
one bucket field per observation, and the readers (`model_snapshot`, the Prometheus
families) give cumulative buckets, counting cumulative fields older workers wrote too."""

from __future__ import annotations

import redis
from prometheus_client import CollectorRegistry, generate_latest

from workers import keys
from workers.metrics import BUCKETS, Recorder, cumulative_field, model_snapshot
from workers.prometheus import PoolCollector

MODEL = "m"


def _finish(recorder: Recorder, job_id: str, ttft_s: float, tps: float, wait_s: float) -> None:
    result = {"stats": {"time_to_first_token_s": ttft_s, "tokens_per_second": tps,
                        "predicted_tokens_count": 16},
              "timing": {"queue_wait_s": wait_s}}
    assert recorder.finished(MODEL, job_id, "succeeded", result, stopped=True)


def test_buckets_are_cumulative_when_read_and_one_field_per_observation_when_written(redis_url):
    client = redis.Redis.from_url(redis_url)
    recorder = Recorder(client)
    _finish(recorder, "a", ttft_s=0.02, tps=900, wait_s=0.003)
    _finish(recorder, "b", ttft_s=0.3, tps=2000, wait_s=2)  # tps above the largest bound

    fields = {k.decode() for k in client.hkeys(keys.metrics(MODEL))}
    bucket_fields = {f for f in fields if "_in_" in f}
    # one per observation with a bound: 3 for job a, 2 for job b (2000 tokens/s: +Inf only)
    assert bucket_fields == {"time_to_first_token_s_in_0.05", "time_to_first_token_s_in_0.5",
                             "tokens_per_second_in_1000", "queue_wait_s_in_0.01",
                             "queue_wait_s_in_5"}

    snap = model_snapshot(client, MODEL)
    assert snap["time_to_first_token_s"]["buckets"] == {
        0.05: 1, 0.1: 1, 0.25: 1, 0.5: 2, 1: 2, 2.5: 2, 5: 2, 10: 2, 30: 2}
    assert snap["tokens_per_second"]["buckets"] == {b: int(b >= 1000)
                                                    for b in BUCKETS["tokens_per_second"]}
    assert snap["tokens_per_second"]["count"] == 2
    assert snap["queue_wait_s"]["buckets"][0.01] == 1
    assert snap["queue_wait_s"]["buckets"][1] == 1
    assert snap["queue_wait_s"]["buckets"][5] == 2


def test_cumulative_counts_of_older_workers_still_count(redis_url):
    client = redis.Redis.from_url(redis_url)
    # what a worker before the change left: 4 jobs with a time to first token <= 0.1 s,
    # 5 <= 1 s (cumulative, so every bound from 0.1 up), 6 in all
    older = {cumulative_field("time_to_first_token_s", b): 4 if b < 1 else 5
             for b in BUCKETS["time_to_first_token_s"] if b >= 0.1}
    client.hset(keys.metrics(MODEL), mapping={**older, "time_to_first_token_s_count": 6,
                                              "time_to_first_token_s_sum": 9.0})
    client.sadd("lmq:metrics:models", MODEL)
    _finish(Recorder(client), "new", ttft_s=0.2, tps=100, wait_s=0.5)

    buckets = model_snapshot(client, MODEL)["time_to_first_token_s"]["buckets"]
    assert buckets == {0.05: 0, 0.1: 4, 0.25: 5, 0.5: 5, 1: 6, 2.5: 6, 5: 6, 10: 6, 30: 6}

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(redis_url))
    text = generate_latest(registry).decode()
    label = f'model="{MODEL}"'
    for bound, count in (("0.1", 4), ("0.25", 5), ("1", 6), ("+Inf", 7)):
        assert f'lmq_time_to_first_token_seconds_bucket{{le="{bound}",{label}}} {count}.0' in text
