"""The Batch API of `lmq serve` with the official `openai` client: upload, create, poll,
list, cancel, output and error files, and a gateway restart in between. Real uvicorn in a
thread, real Redis, a real `celery -A workers worker`, the simulator as LM Studio."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import openai
import pytest
from pydantic import SecretStr

from producers.gateway.server import serve_in_thread
from producers.local_pool import LocalPool
from producers.redis_server import RedisServer
from tests.support.pool import pool_on_database
from tests.support.wait import wait_until

CHAT = "llama-3.2-1b-instruct"
KEY, OTHER_KEY = "sk-batch-team", "sk-other-team"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, sim: object) -> Iterator[LocalPool]:
    with pool_on_database(redis_server, sim, 13, [CHAT]) as started:
        yield started


def gateway_settings(pool: LocalPool):  # type: ignore[no-untyped-def]
    keys = SecretStr(f"{KEY}=batch-team,{OTHER_KEY}=other-team:low")
    return pool.settings.model_copy(update={"api_keys": keys})


@pytest.fixture(scope="module")
def base_url(pool: LocalPool) -> Iterator[str]:
    with serve_in_thread(gateway_settings(pool)) as url:
        yield url


@pytest.fixture()
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0) as made:
        yield made


@pytest.fixture(autouse=True)
def fresh_sim(sim: object) -> Iterator[None]:
    sim.admin.reset()  # type: ignore[attr-defined]
    sim.admin.set_timing(decode_tokens_per_s=400.0)  # type: ignore[attr-defined]
    yield


def chat_line(custom_id: str, prompt: str, max_tokens: int = 12) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": CHAT, "max_tokens": max_tokens,
                     "messages": [{"role": "user", "content": prompt}]}}


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def upload(client: openai.OpenAI, lines: list[dict], name: str = "input.jsonl"):  # type: ignore[no-untyped-def]
    return client.files.create(file=(name, io.BytesIO(jsonl(lines))), purpose="batch")


def settled(client: openai.OpenAI, batch_id: str, status: str):  # type: ignore[no-untyped-def]
    def reached():  # type: ignore[no-untyped-def]
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status == status else None

    return wait_until(reached, timeout=120, interval=0.2,
                      message=lambda: f"batch {batch_id} {status} "
                      f"(now {client.batches.retrieve(batch_id).status})")


def lines_of(client: openai.OpenAI, file_id: str) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def held_batch(gateway, batch_id: str, input_file_id: str,  # type: ignore[no-untyped-def]
               window: str = "24h", window_s: int = 86400) -> tuple[dict, str]:
    """A batch stored and listed as the create route does, its lock held by `gateway` (so
    only the test steps it): the record and the lock's token."""
    from producers.gateway import batch_lifecycle
    from producers.gateway.records import OpenBatches

    record = batch_lifecycle.new_record(batch_id, {"endpoint": "/v1/chat/completions",
                                                   "input_file_id": input_file_id,
                                                   "completion_window": window}, window_s)
    token = gateway.batches.lock(record["id"])
    assert token is not None
    gateway.batches.put(record["id"], record, "batch-team", priority="normal")
    OpenBatches(gateway.batches.client).add(record["id"])
    return record, token


def test_batch_lifecycle_with_output_and_error_files(client: openai.OpenAI,
                                                     pool: LocalPool) -> None:
    too_long = "word " * 20_000  # over the model's context: this request fails at the worker
    lines = [chat_line(f"req-{i}", f"Say hello number {i}") for i in range(3)]
    lines.append(chat_line("too-long", too_long))
    source = upload(client, lines)
    assert source.purpose == "batch" and source.bytes == len(jsonl(lines))
    assert client.files.retrieve(source.id).filename == "input.jsonl"
    assert client.files.content(source.id).content == jsonl(lines)

    batch = client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"run": "test"})
    assert batch.status == "validating" and batch.request_counts.total == 0
    assert batch.metadata == {"run": "test"} and batch.expires_at == batch.created_at + 86400

    done = settled(client, batch.id, "completed")
    assert done.request_counts.total == 4
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 1)
    assert done.completed_at and done.finalizing_at and done.output_file_id
    output = lines_of(client, done.output_file_id)
    assert [o["custom_id"] for o in output] == ["req-0", "req-1", "req-2"]
    body = output[0]["response"]["body"]
    assert output[0]["response"]["status_code"] == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] and body["lmq_stats"]["stats"]
    errors = lines_of(client, done.error_file_id)
    assert [e["custom_id"] for e in errors] == ["too-long"]
    assert errors[0]["response"]["status_code"] == 400
    assert "context" in errors[0]["response"]["body"]["error"]["message"]
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_bad_lines_are_refused_at_upload(client: openai.OpenAI) -> None:
    lines = [chat_line("a", "hi"), {"custom_id": "b", "url": "/v1/nothing", "body": {}},
             chat_line("a", "again")]
    with pytest.raises(openai.BadRequestError) as caught:
        upload(client, lines)
    message = caught.value.message
    assert "line 2: url must be one of" in message and "line 3: duplicate custom_id 'a'" in message
    with pytest.raises(openai.BadRequestError, match="purpose must be 'batch'"):
        client.files.create(file=("x.jsonl", io.BytesIO(jsonl([chat_line("a", "hi")]))),
                            purpose="fine-tune")


def test_unknown_model_or_other_endpoint_fails_the_batch(client: openai.OpenAI) -> None:
    line = chat_line("x", "hi")
    line["body"]["model"] = "gpt-4o-mini"
    created = client.batches.create(input_file_id=upload(client, [line]).id,
                                    endpoint="/v1/chat/completions", completion_window="24h")
    assert created.status == "validating"
    failed = settled(client, created.id, "failed")
    assert failed.failed_at and failed.in_progress_at is None
    assert failed.errors.data[0].code == "model_not_found" and failed.errors.data[0].line == 1
    assert CHAT in failed.errors.data[0].message
    other = client.batches.create(input_file_id=upload(client, [chat_line("y", "hi")]).id,
                                  endpoint="/v1/embeddings", completion_window="24h")
    other = settled(client, other.id, "failed")
    assert other.errors.data[0].code == "invalid_url" and other.errors.data[0].line == 1
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(input_file_id=upload(client, [chat_line("z", "hi")]).id,
                              endpoint="/v1/chat/completions", completion_window="soon")


def test_cancel_keeps_what_finished_and_survives_a_restart(client: openai.OpenAI,
                                                            pool: LocalPool,
                                                            sim: object) -> None:
    sim.admin.set_timing(decode_tokens_per_s=20.0)  # type: ignore[attr-defined]
    lines = [chat_line(f"slow-{i}", f"Write a long story {i}", max_tokens=300)
             for i in range(12)]
    batch = client.batches.create(input_file_id=upload(client, lines).id,
                                  endpoint="/v1/chat/completions", completion_window="1h")
    wait_until(lambda: sim.admin.log(type="channelSend:fragment"),  # type: ignore[attr-defined]
               timeout=60, message="the first predictions generating")
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at

    # a new gateway process on the same Redis: the records and files are all there
    with serve_in_thread(gateway_settings(pool)) as url, \
            openai.OpenAI(base_url=url, api_key=KEY, max_retries=0) as again:
        cancelled = settled(again, batch.id, "cancelled")
        counts = cancelled.request_counts
        assert counts.total == 12 and counts.completed + counts.failed == 12
        assert counts.failed >= 1 and cancelled.cancelled_at and cancelled.error_file_id
        errors = lines_of(again, cancelled.error_file_id)
        assert len(errors) == counts.failed
        assert {(e["error"] or {}).get("code") for e in errors} == {"batch_cancelled"}
        assert all(e["custom_id"].startswith("slow-") for e in errors)
        # never ran: no response; stopped mid-prediction: its partial response
        assert all(e["response"] is None or e["response"]["body"]["choices"]
                   for e in errors)


def test_cancelled_while_validating_lists_every_request_not_completed(
        client: openai.OpenAI, pool: LocalPool, sim: object) -> None:
    """A cancel that arrives while the advancer is enqueueing (between its chunks): the
    lines enqueued are revoked, the rest never enqueued, and every request is in one of the
    two files: completed in the output file, every other one in the error file (those that
    never ran: batch_cancelled, no response). The step runs here, holding the batch's lock
    as the gateway's loop would, and the cancel is sent over HTTP from inside it, after the
    first chunk was let through and before it is published: no timing decides where the
    cancel lands."""
    from producers.gateway import batch_lifecycle
    from producers.gateway.auth import KeyRing
    from producers.gateway.state import Gateway
    from producers.publisher import CHUNK_JOBS
    from workers import keys

    sim.admin.set_timing(decode_tokens_per_s=5.0)  # type: ignore[attr-defined]
    total = CHUNK_JOBS + 100
    lines = [chat_line(f"v-{i}", f"Hello {i}") for i in range(total)]
    source = upload(client, lines)
    stepping = Gateway.open(gateway_settings(pool), KeyRing({}))
    try:
        record, token = held_batch(stepping, "batch_cancelmid" + source.id[-12:], source.id,
                                   "1h", 3600)
        asked = []

        def keep_lock() -> bool:  # asked before each chunk, while no cancel was seen
            asked.append(True)
            answer = client.batches.cancel(record["id"])  # the first chunk is let through
            assert answer.status == "cancelling" and answer.cancelling_at
            return True

        batch_lifecycle.advance(stepping, record["id"], keep_lock=keep_lock)
        stepping.batches.unlock(record["id"], token)  # the gateway's loop finishes it
    finally:
        stepping.queue.close()
        stepping.access.close()
    assert len(asked) == 1  # before the second chunk the cancel was seen

    cancelled = settled(client, record["id"], "cancelled")
    enqueued = pool.queue.store_client.llen(keys.batch_jobs(record["id"]))
    assert cancelled.in_progress_at is None and cancelled.cancelled_at
    counts = cancelled.request_counts
    assert counts.total == total and enqueued == CHUNK_JOBS
    output = lines_of(client, cancelled.output_file_id) if cancelled.output_file_id else []
    errors = lines_of(client, cancelled.error_file_id)
    assert len(output) == counts.completed and len(errors) == counts.failed
    assert counts.completed + counts.failed == total
    assert sorted(o["custom_id"] for o in output + errors) \
        == sorted(f"v-{i}" for i in range(total))  # each request in one file, once
    never_ran = [e for e in errors if e["response"] is None]
    assert never_ran and {e["error"]["code"] for e in never_ran} == {"batch_cancelled"}
    never_enqueued = {f"v-{i}" for i in range(enqueued, total)}
    assert never_enqueued <= {e["custom_id"] for e in never_ran}


def test_a_cancel_and_the_batchs_ending_never_cross(client: openai.OpenAI,
                                                    pool: LocalPool) -> None:
    """The advance step has counted every job finished and found no cancel; a cancel that
    comes before the ending is fixed makes the batch end cancelled (nothing left to revoke,
    everything in the output file), one that comes after is not taken (the reply shows the
    batch as it is) and the batch completes. Both orders are played here step by step."""
    from producers import batch as batch_files
    from producers.gateway import batch_lifecycle
    from producers.gateway.auth import KeyRing, Tenant
    from producers.gateway.state import Gateway

    stepping = Gateway.open(gateway_settings(pool), KeyRing({}))
    source = upload(client, [chat_line(f"end-{i}", f"Say hello number {i}") for i in range(2)])
    try:
        ended = {}
        for order in ("cancel first", "ending first"):
            record, token = held_batch(stepping, f"batch_{order[:6]}{source.id[-12:]}",
                                       source.id)
            batch_lifecycle.advance(stepping, record["id"], keep_lock=lambda: True)
            wait_until(lambda batch_id=record["id"]: batch_files.status(
                stepping.queue, batch_id)["finished"] == 2, timeout=60,
                message="both jobs finished")
            found = stepping.batches.get_any(record["id"])
            assert found is not None and found[0]["status"] == "in_progress"
            if order == "cancel first":
                assert client.batches.cancel(record["id"]).status == "cancelling"
            else:
                assert batch_lifecycle._fix_ending(stepping, record["id"], "completed") \
                    == "completed"
                assert client.batches.cancel(record["id"]).status == "in_progress"
            batch_lifecycle._finalize(stepping, found[0], Tenant("batch-team"))
            batch_lifecycle.advance(stepping, record["id"], keep_lock=lambda: True)  # done
            stepping.batches.unlock(record["id"], token)
            ended[order] = client.batches.retrieve(record["id"])
    finally:
        stepping.queue.close()
        stepping.access.close()
    cancelled, completed = ended["cancel first"], ended["ending first"]
    assert cancelled.status == "cancelled" and cancelled.cancelling_at \
        and cancelled.cancelled_at and cancelled.error_file_id is None
    assert (cancelled.request_counts.completed, cancelled.request_counts.failed) == (2, 0)
    assert len(lines_of(client, cancelled.output_file_id)) == 2
    assert completed.status == "completed" and completed.cancelling_at is None
    assert completed.request_counts.completed == 2


def test_list_is_newest_first_and_paginated(client: openai.OpenAI) -> None:
    made = [client.batches.create(input_file_id=upload(client, [chat_line("p", "hi")]).id,
                                  endpoint="/v1/chat/completions", completion_window="24h").id
            for _ in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
    rest = client.batches.list(limit=2, after=first.data[-1].id)
    assert rest.data[0].id == made[0]
    every = [b.id for b in client.batches.list(limit=1)]  # the client follows pages
    assert every[:3] == made[::-1]


def test_tenants_see_only_their_own_files_and_batches(client: openai.OpenAI,
                                                       base_url: str) -> None:
    source = upload(client, [chat_line("t", "hi")])
    batch = client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    with openai.OpenAI(base_url=base_url, api_key=OTHER_KEY, max_retries=0) as other:
        with pytest.raises(openai.NotFoundError):
            other.files.retrieve(source.id)
        with pytest.raises(openai.NotFoundError):
            other.batches.retrieve(batch.id)
        assert batch.id not in [b.id for b in other.batches.list(limit=100).data]
    deleted = client.files.delete(source.id)
    assert deleted.deleted and deleted.id == source.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(source.id)


def test_completion_window_expiry_revokes_what_is_left(client: openai.OpenAI,
                                                        pool: LocalPool, sim: object) -> None:
    from producers.gateway.records import Records

    sim.admin.set_timing(decode_tokens_per_s=20.0)  # type: ignore[attr-defined]
    lines = [chat_line(f"late-{i}", f"Write a long story {i}", max_tokens=300)
             for i in range(10)]
    batch = client.batches.create(input_file_id=upload(client, lines).id,
                                  endpoint="/v1/chat/completions", completion_window="1h")
    # An hour is too long to wait for: move the recorded deadline into the past instead,
    # holding the batch's lock as the gateway's loop does (so it cannot write over it).
    records = Records(pool.queue.store_client, "batch", 3600)
    token = wait_until(lambda: records.lock(batch.id), timeout=30, interval=0.01,
                       message="the batch's lock")
    try:
        record = records.get(batch.id, "batch-team")
        assert record is not None
        records.update(batch.id, {**record, "expires_at": record["created_at"] - 1})
    finally:
        records.unlock(batch.id, token)

    expired = settled(client, batch.id, "expired")
    assert expired.expired_at and expired.request_counts.failed >= 1
    errors = lines_of(client, expired.error_file_id)
    assert errors and {e["error"]["code"] for e in errors if e["error"]} == {"batch_expired"}


def test_a_polling_client_sees_validating_then_in_progress_then_completed(
        client: openai.OpenAI, sim: object) -> None:
    sim.admin.set_timing(decode_tokens_per_s=40.0)  # type: ignore[attr-defined]
    lines = [chat_line(f"seen-{i}", f"Tell me about {i}", max_tokens=20) for i in range(4)]
    batch = client.batches.create(input_file_id=upload(client, lines).id,
                                  endpoint="/v1/chat/completions", completion_window="24h")
    seen = [batch.status]

    def done():  # type: ignore[no-untyped-def]
        now = client.batches.retrieve(batch.id)
        if now.status != seen[-1]:
            seen.append(now.status)
        return now if now.status == "completed" else None

    final = wait_until(done, timeout=120, interval=0.05, message=lambda: f"completed ({seen})")
    order = ["validating", "in_progress", "finalizing", "completed"]
    assert seen[0] == "validating" and "in_progress" in seen and seen[-1] == "completed"
    assert seen == sorted(seen, key=order.index)  # never back, nothing else in between
    assert final.created_at <= final.in_progress_at <= final.finalizing_at \
        <= final.completed_at
    assert final.request_counts.total == final.request_counts.completed == 4


def test_a_batch_no_one_polls_completes_by_itself(client: openai.OpenAI,
                                                   pool: LocalPool) -> None:
    from producers.gateway.records import Records

    lines = [chat_line(f"quiet-{i}", f"Say hello number {i}") for i in range(3)]
    batch = client.batches.create(input_file_id=upload(client, lines).id,
                                  endpoint="/v1/chat/completions", completion_window="24h")
    records = Records(pool.queue.store_client, "batch", 3600)
    # Wait on the stored record itself: no request reaches the gateway meanwhile.
    wait_until(lambda: (records.get(batch.id, "batch-team") or {}).get("status")
               == "completed", timeout=120, interval=0.2, message="the batch completed")
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3
    output = lines_of(client, done.output_file_id)
    assert [o["custom_id"] for o in output] == ["quiet-0", "quiet-1", "quiet-2"]
    replies = [o["response"]["body"]["choices"][0]["message"]["content"] for o in output]
    direct = [client.chat.completions.create(model=CHAT, max_tokens=12, messages=[
        {"role": "user", "content": f"Say hello number {i}"}]).choices[0].message.content
              for i in range(3)]
    assert replies == direct  # the simulator is deterministic: each line's own answer
    assert done.error_file_id is None


def test_validation_cut_short_resumes_without_enqueueing_a_line_twice(
        client: openai.OpenAI, pool: LocalPool, sim: object) -> None:
    """A gateway stopped mid-validation left half the lines enqueued; the next gateway
    enqueues only the other half."""
    from producers.batch import validate_file
    from producers.gateway import batch_intake
    from producers.gateway.auth import KeyRing
    from producers.gateway.state import Gateway
    from workers import keys

    lines = [chat_line(f"resume-{i}", f"Resume marker {i}") for i in range(6)]
    source = upload(client, lines)
    stopped = Gateway.open(gateway_settings(pool), KeyRing({}))
    try:
        # the stopped gateway's lock, mid-validation
        record, token = held_batch(stopped, "batch_resume" + source.id[-12:], source.id)
        path = tmp_jsonl(jsonl(lines))
        requests = validate_file(path).requests
        assert batch_intake.enqueue(stopped, record, requests[:3],
                                    keep_going=lambda: True) == 3
        stopped.batches.unlock(record["id"], token)  # it died: its lock is gone
    finally:
        stopped.queue.close()
        stopped.access.close()

    with serve_in_thread(gateway_settings(pool)) as url, \
            openai.OpenAI(base_url=url, api_key=KEY, max_retries=0) as again:
        done = settled(again, record["id"], "completed")
        assert done.request_counts.total == done.request_counts.completed == 6
        output = lines_of(again, done.output_file_id)
    assert sorted(o["custom_id"] for o in output) == [f"resume-{i}" for i in range(6)]
    job_ids = pool.queue.store_client.lrange(keys.batch_jobs(record["id"]), 0, -1)
    assert len(job_ids) == len(set(job_ids)) == 6
    predictions = [e for e in sim.admin.log(type="channelCreate")  # type: ignore[attr-defined]
                   if e["msg"].get("endpoint") == "predict" and "Resume marker" in json.dumps(e)]
    assert len(predictions) == 6  # each line ran once


def tmp_jsonl(content: bytes):  # type: ignore[no-untyped-def]
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="lmq-test-")) / "input.jsonl"
    path.write_bytes(content)
    return path


def test_a_batch_lines_tool_choice_is_applied_as_over_http(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {
        "name": name, "description": f"The {name} tool.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}
        for name in ("first_tool", "second_tool")]
    line = chat_line("forced", "Tell me a story about the sea", max_tokens=60)
    line["body"].update(tools=tools, tool_choice={"type": "function",
                                                  "function": {"name": "second_tool"}})
    batch = client.batches.create(input_file_id=upload(client, [line]).id,
                                  endpoint="/v1/chat/completions", completion_window="24h")
    done = settled(client, batch.id, "completed")
    message = lines_of(client, done.output_file_id)[0]["response"]["body"]["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["tool_calls"][0]["function"]["name"] == "second_tool"
    bad = chat_line("bad", "hi")
    bad["body"].update(tools=tools, tool_choice={"type": "custom", "custom": {"name": "x"}})
    with pytest.raises(openai.BadRequestError, match="line 1: body.tool_choice type 'custom'"):
        upload(client, [bad])


def test_a_batch_takes_its_requests_from_the_upload_not_its_lines(
        client: openai.OpenAI, pool: LocalPool) -> None:
    """Lines are validated once, at upload: the batch runs what that validation produced
    (here the file's bytes are spoiled after upload, and it still runs its two requests). A
    file kept without them (by an older gateway) is validated when its batch starts."""
    from workers import keys

    store = pool.queue.store_client
    kept = upload(client, [chat_line(f"kept-{i}", f"Say hello number {i}") for i in range(2)])
    store.hset(keys.gateway_file(kept.id), "content", b"not json at all\n")
    older = upload(client, [chat_line("older", "Say hello number 0")])
    store.hdel(keys.gateway_file(older.id), "requests")
    done = [settled(client, client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions",
        completion_window="24h").id, "completed") for source in (kept, older)]
    assert [o["custom_id"] for o in lines_of(client, done[0].output_file_id)] \
        == ["kept-0", "kept-1"]
    assert [o["custom_id"] for o in lines_of(client, done[1].output_file_id)] == ["older"]


def test_a_line_over_the_pools_limits_is_refused_at_upload(client: openai.OpenAI) -> None:
    """It would fail at submit (JobQueue's size limits): refused at upload, naming the
    line, so no batch is ever created from it."""
    too_many = {"custom_id": "many", "method": "POST", "url": "/v1/embeddings",
                "body": {"model": "nomic-embed", "input": ["word"] * 4097}}
    with pytest.raises(openai.BadRequestError) as caught:
        upload(client, [chat_line("fine", "hi"), too_many])
    assert "line 2: an embedding job may carry at most 4096 texts" in caught.value.message
