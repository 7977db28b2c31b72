"""JobQueue end to end: real Redis, real `celery -A workers worker` processes, the real SDK
against the simulator. Each job kind with stats, streaming, progress, routing, many jobs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from producers import InvalidJobError, JobQueue, ModelNotServedError
from producers.local_pool import LocalPool
from producers.redis_server import RedisServer
from tests.support.pool import pool_on_database
from tests.support.wait import wait_until
from workers.contract import PROGRESS, ChatResult, CompletionResult, EmbeddingResult

CHAT = "llama-3.2-1b-instruct"
EMBED = "text-embedding-nomic-embed-text-v1.5"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, sim: object) -> Iterator[LocalPool]:
    with pool_on_database(redis_server, sim, 3, [CHAT, EMBED]) as started:
        yield started


@pytest.fixture(autouse=True)
def fresh_sim(sim: object) -> Iterator[None]:
    admin = sim.admin  # type: ignore[attr-defined]
    admin.reset()
    admin.set_timing(decode_tokens_per_s=200.0)
    yield
    admin.reset()
    admin.set_timing(decode_tokens_per_s=200.0)


def test_chat_end_to_end_with_stats(pool: LocalPool) -> None:
    result = pool.queue.chat(CHAT, "Hello there", config={"max_tokens": 20}).result(timeout=60)
    assert isinstance(result, ChatResult)
    assert result.content and result.model.model_key == CHAT
    assert result.stats.stop_reason in {"eosFound", "maxPredictedTokensReached"}
    assert result.stats.predicted_tokens_count and result.stats.tokens_per_second
    assert result.timing.queue_wait_s is not None and result.timing.queue_wait_s >= 0
    assert result.worker == pool.workers[0].hostname


def test_served_check_reads_the_workers_registrations(pool: LocalPool) -> None:
    from workers.served_registry import live_workers

    store = pool.queue.store_client
    assert live_workers(store, CHAT) == [pool.workers[0].hostname]
    assert live_workers(store, EMBED) == [pool.workers[1].hostname]
    queue = JobQueue(pool.queue.settings)
    queue.chat(CHAT, "Hi", config={"max_tokens": 4}).result(timeout=60)
    # answered by the registry: no `inspect` broadcast, which waits a whole reply timeout
    assert queue._served._fetched_at == float("-inf")


def test_completion_and_embedding_end_to_end(pool: LocalPool) -> None:
    completion = pool.queue.complete(CHAT, "The sky is", config={"max_tokens": 10})
    embedding = pool.queue.embed(EMBED, ["one text", "another text"])
    done = completion.result(timeout=60)
    vectors = embedding.result(timeout=60)
    assert isinstance(done, CompletionResult) and done.content and done.stats.stop_reason
    assert isinstance(vectors, EmbeddingResult)
    assert len(vectors.vectors) == 2 and vectors.dimension == len(vectors.vectors[0]) > 0
    assert vectors.total_tokens == sum(vectors.token_counts) > 0
    assert vectors.worker == pool.workers[1].hostname  # routed to the embedding worker


def test_stream_yields_the_content_and_replays_after_the_end(pool: LocalPool) -> None:
    handle = pool.queue.chat(CHAT, "Tell me a story", config={"max_tokens": 40})
    streamed = "".join(handle.stream(timeout=60))
    result = handle.result(timeout=60)
    assert streamed == result.content and streamed
    assert "".join(handle.stream(timeout=10)) == result.content  # after it finished


def test_progress_while_generating(pool: LocalPool, sim: object) -> None:
    sim.admin.set_timing(decode_tokens_per_s=10.0)  # type: ignore[attr-defined]
    handle = pool.queue.chat(CHAT, "Slowly, please", config={"max_tokens": 60})
    progress = wait_until(lambda: handle.progress() if handle.status() == PROGRESS else None,
                          timeout=60, message="a PROGRESS state")
    assert progress.phase in {"admission", "prefill", "generating"}
    moving = wait_until(lambda: (p := handle.progress()) and p.tokens_so_far > 0 and p,
                        timeout=60, message="tokens in the progress meta")
    assert moving.phase == "generating" and moving.worker == pool.workers[0].hostname
    handle.cancel()


def test_many_concurrent_jobs_with_submit_many(pool: LocalPool, sim: object) -> None:
    sim.admin.set_timing(decode_tokens_per_s=2000.0)  # type: ignore[attr-defined]
    jobs = [{"kind": "chat", "model": CHAT, "messages": f"job {i}",
             "config": {"max_tokens": 8}} for i in range(200)]
    handles = pool.queue.submit_many(jobs, batch_id=f"b-{uuid.uuid4()}")
    ids = [handle.id for handle in handles]
    assert len(set(ids)) == 200

    def all_done() -> dict[str, tuple[str, object]] | None:
        found = pool.queue.fetch_results(ids)
        return found if all(state == "SUCCESS" for state, _ in found.values()) else None

    found = wait_until(all_done, timeout=180, interval=0.2, message="200 results")
    assert {payload["job_id"] for _state, payload in found.values()} == set(ids)


def test_unknown_model_names_the_served_models(pool: LocalPool) -> None:
    with pytest.raises(ModelNotServedError) as caught:
        pool.queue.chat("no-such-model", "hi")
    assert CHAT in str(caught.value) and EMBED in str(caught.value)


def test_enqueue_anyway_waits_for_a_worker(pool: LocalPool) -> None:
    handle = pool.queue.chat("qwen2.5-7b-instruct", "hi", enqueue_anyway=True)
    assert handle.status() == "PENDING"
    assert pool.queue.job_record(handle.id)["model"] == "qwen2.5-7b-instruct"
    assert pool.queue.handle(handle.id).cancel().value == "revoked"


def test_bad_inputs_fail_before_sending(pool: LocalPool) -> None:
    before = pool.queue.backend_client.llen("lmq." + CHAT)
    with pytest.raises(InvalidJobError, match="temperature"):
        pool.queue.chat(CHAT, "hi", config={"temperature": -1})
    with pytest.raises(InvalidJobError, match="messages"):
        pool.queue.chat(CHAT, [])
    with pytest.raises(InvalidJobError, match="empty"):
        pool.queue.embed(EMBED, ["fine", "  "])
    assert pool.queue.backend_client.llen("lmq." + CHAT) == before


def test_async_api(pool: LocalPool) -> None:
    async def main() -> tuple[str, str]:
        handle = await pool.queue.achat(CHAT, "async hello", config={"max_tokens": 12})
        streamed = "".join([text async for text in handle.astream(timeout=60)])
        result = await handle.aresult(timeout=60)
        return streamed, result.content

    streamed, content = asyncio.run(main())
    assert streamed == content and content


def test_a_second_queue_sees_results_by_id(pool: LocalPool) -> None:
    handle = pool.queue.embed(EMBED, "by id")
    with JobQueue(pool.settings) as other:
        started = time.monotonic()
        result = other.handle(handle.id).result(timeout=60)
        assert time.monotonic() - started < 60
    assert isinstance(result, EmbeddingResult) and result.job_id == handle.id
