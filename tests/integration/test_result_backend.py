"""The worker app's result backend on a real redis-server: one script per state write
(no GET round trip before it), a stored SUCCESS or REVOKED kept, the same PUBLISH."""

from __future__ import annotations

import json

import redis
from celery import states

from workers.celery import create_app
from workers.delivery.result_backend import StateScriptBackend
from workers.error import JobCancelledError
from workers.settings import Settings


def _backend(redis_url: str) -> StateScriptBackend:
    app = create_app(Settings(broker_url=redis_url, result_backend=redis_url))
    backend = app.backend
    assert isinstance(backend, StateScriptBackend)
    return backend


def _calls(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"])
            for name, v in client.info("commandstats").items()}


def _state(backend: StateScriptBackend, job_id: str) -> str:
    return str(backend.get_task_meta(job_id, cache=False)["status"])


def test_a_state_write_is_one_script_and_publishes_the_stored_meta(redis_url):
    backend, client = _backend(redis_url), redis.Redis.from_url(redis_url)
    backend.store_result("job-1", {"started": True}, states.STARTED)  # loads the script
    listener = client.pubsub()
    listener.subscribe(backend.get_key_for_task("job-1"))
    assert listener.get_message(timeout=2)["type"] == "subscribe"
    before = _calls(client)

    backend.store_result("job-1", {"content": "hi"}, states.SUCCESS)

    after = _calls(client)
    sent = {name: after[name] - before.get(name, 0) for name in after
            if after[name] != before.get(name, 0)}
    # one EVALSHA; the GET, SETEX and PUBLISH run inside it; no MULTI of Celery's write
    assert sent.get("evalsha") == 1 and "multi" not in sent and "exec" not in sent
    assert sent.get("get") == 1 and sent.get("setex") == 1 and sent.get("publish") == 1
    message = listener.get_message(timeout=2)
    stored = client.get(backend.get_key_for_task("job-1"))
    assert message["data"] == stored
    assert json.loads(stored)["result"] == {"content": "hi"}
    assert 0 < client.ttl(backend.get_key_for_task("job-1")) <= backend.expires


def test_a_stored_success_or_revoked_is_kept(redis_url):
    backend = _backend(redis_url)
    backend.store_result("done", {"content": "first"}, states.SUCCESS)
    backend.store_result("done", RuntimeError("late duplicate"), states.FAILURE)
    backend.store_result("done", JobCancelledError("late", None), states.REVOKED)
    assert _state(backend, "done") == states.SUCCESS
    assert backend.get_task_meta("done", cache=False)["result"] == {"content": "first"}

    backend.store_result("cancelled", JobCancelledError("cancelled while queued", None),
                         states.REVOKED)
    backend.store_result("cancelled", {"content": "ran anyway"}, states.SUCCESS)
    backend.store_result("cancelled", RuntimeError("boom"), states.FAILURE)
    assert _state(backend, "cancelled") == states.REVOKED
    # a job cancelled while it ran stores its REVOKED with the partial result over it
    backend.store_result("cancelled", JobCancelledError("cancelled", {"content": "par"}),
                         states.REVOKED)
    assert "'content': 'par'" in repr(backend.get_task_meta("cancelled", cache=False)["result"])


def test_unfinished_and_failed_states_are_overwritten_as_celery_does(redis_url):
    backend = _backend(redis_url)
    backend.store_result("job", {"phase": "prefill"}, states.STARTED)
    backend.store_result("job", RuntimeError("LM Studio said no"), states.FAILURE)
    assert _state(backend, "job") == states.FAILURE
    backend.store_result("job", {"content": "retried"}, states.SUCCESS)
    assert _state(backend, "job") == states.SUCCESS
