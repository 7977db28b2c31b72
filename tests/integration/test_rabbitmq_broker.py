"""The core job paths on both brokers: Redis, and RabbitMQ with results on Redis.

Bigger deployments use RabbitMQ as the broker while results, progress streams and admission
stay on Redis (ops/runbook.md). The same cases — a chat job end to end, an embedding job,
a cancel of a running prediction — run against each broker with real `celery -A workers
worker` processes and the simulator; on RabbitMQ also the redelivery of a SIGKILLed
worker's running job (acks late). Long jobs on RabbitMQ: see ops/runbook.md §5 for
`consumer_timeout` (default 30 min), which must exceed the longest job.

RabbitMQ is found at LMQ_TEST_AMQP_URL, else amqp://guest:guest@127.0.0.1:5672//. Each test
run gets a fresh vhost (`rabbitmqctl add_vhost`, deleted afterwards), so its queues and
pidbox exchanges never meet another run's; without rabbitmqctl rights it falls back to the
URL's own vhost and purges our model queues first. When RabbitMQ does not answer, the cases
skip — but under CI=true they fail if RabbitMQ was expected: LMQ_TEST_AMQP_URL is set, or
a RabbitMQ server is installed on this machine (as on CI's machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from producers import JobCancelledError, JobQueue
from producers.redis_server import RedisServer
from producers.worker_process import WorkerProcess
from tests.support.services import IN_CI, start_worker
from tests.support.wait import wait_until
from workers.contract import PROGRESS, ChatResult, EmbeddingResult, queue_name
from workers.settings import Settings

CHAT = "llama-3.2-1b-instruct"
EMBED = "text-embedding-nomic-embed-text-v1.5"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"

pytestmark = pytest.mark.timeout(240)


def worker_env(sim: object, broker_url: str, results_url: str, **extra: str) -> dict[str, str]:
    """A worker's environment on this broker, results on Redis, plus `extra` settings."""
    return {"LMQ_BROKER_URL": broker_url, "LMQ_RESULT_BACKEND": results_url,
            "LMQ_LMSTUDIO_HOST": sim.host,  # type: ignore[attr-defined]
            "LMQ_GPU_MEMORY": "24GiB", "PYTHONUNBUFFERED": "1", **extra}


# --- RabbitMQ ---------------------------------------------------------------------------


def amqp_url() -> str:
    return os.environ.get("LMQ_TEST_AMQP_URL", DEFAULT_AMQP_URL)


def rabbitmq_expected() -> bool:
    installed = any(
        shutil.which(tool) for tool in ("rabbitmq-server", "rabbitmqctl")
    ) or os.path.exists("/usr/sbin/rabbitmq-server")
    return "LMQ_TEST_AMQP_URL" in os.environ or installed


def answers(url: str, timeout_s: float = 2.0) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 5672), timeout=timeout_s
        ):
            return True
    except OSError:
        return False


def require_rabbitmq(url: str) -> None:
    if answers(url):
        return
    reason = f"RabbitMQ does not answer at {urlsplit(url).hostname}:{urlsplit(url).port}"
    if IN_CI and rabbitmq_expected():
        pytest.fail(f"{reason}, but it is expected here (start it: rabbitmq-server -detached)")
    pytest.skip(reason)


def rabbitmqctl(*args: str) -> bool:
    tool = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    if not os.path.exists(tool):
        return False
    try:
        done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def with_vhost(url: str, vhost: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


@contextlib.contextmanager
def fresh_vhost(url: str) -> Iterator[str]:
    """A vhost of our own for this run (deleted after), or the URL's vhost, purged."""
    user = urlsplit(url).username or "guest"
    vhost = f"lmq-test-{uuid.uuid4().hex[:12]}"
    if rabbitmqctl("add_vhost", vhost):
        try:
            if not rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*"):
                pytest.fail(f"rabbitmqctl set_permissions on {vhost} for {user} failed")
            yield with_vhost(url, vhost)
        finally:
            rabbitmqctl("delete_vhost", vhost)
        return
    purge_model_queues(url)
    yield url


def purge_model_queues(url: str) -> None:
    from kombu import Connection

    with Connection(url) as conn:
        channel = conn.default_channel
        for model in (CHAT, EMBED):
            with contextlib.suppress(Exception):
                channel.queue_purge(queue_name(model))


# --- a pool on either broker --------------------------------------------------------------


@dataclass
class BrokerPool:
    broker: str
    queue: JobQueue
    workers: dict[str, WorkerProcess]

    def log_tails(self) -> str:
        return "\n".join(f"--- {w.hostname} ---\n{w.log_tail(40)}" for w in self.workers.values())


@pytest.fixture(scope="module")
def results_url(redis_server: RedisServer) -> str:
    import redis

    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(url).flushdb()  # our own private server: safe to flush
    return url


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def pool(request: pytest.FixtureRequest, sim: object, results_url: str) -> Iterator[BrokerPool]:
    with contextlib.ExitStack() as stack:
        if request.param == "rabbitmq":
            require_rabbitmq(amqp_url())
            broker_url = stack.enter_context(fresh_vhost(amqp_url()))
        else:
            broker_url = results_url
        env = worker_env(sim, broker_url, results_url, LMQ_REDIS_URL=results_url)
        workers: dict[str, WorkerProcess] = {}
        for model in (CHAT, EMBED):
            name = f"{request.param}-{model[:12]}-{uuid.uuid4().hex[:6]}"
            workers[model] = stack.enter_context(_stopping(start_worker(model, env, name=name)))
        settings = Settings(
            broker_url=broker_url,
            result_backend=results_url,
            redis_url=results_url,
            lmstudio_host=sim.host,
        )  # type: ignore[attr-defined]
        queue = stack.enter_context(JobQueue(settings))
        started = BrokerPool(request.param, queue, workers)
        yield started
        if request.session.testsfailed:
            print(f"\n--- {request.param} pool logs ---\n{started.log_tails()}")


@contextlib.contextmanager
def _stopping(worker: WorkerProcess) -> Iterator[WorkerProcess]:
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(autouse=True)
def fresh_sim(sim: object) -> Iterator[None]:
    admin = sim.admin  # type: ignore[attr-defined]
    admin.reset()
    admin.set_timing(decode_tokens_per_s=200.0)
    yield
    admin.reset()
    admin.set_timing(decode_tokens_per_s=200.0)


def test_the_pool_really_uses_the_broker_under_test(pool: BrokerPool) -> None:
    scheme = {"redis": "redis", "rabbitmq": "amqp"}[pool.broker]
    assert pool.queue.app.conf.broker_url.startswith(scheme)
    assert CHAT in pool.queue.served_models(refresh=True)


def test_chat_job_end_to_end(pool: BrokerPool) -> None:
    handle = pool.queue.chat(CHAT, "Hello over the broker", config={"max_tokens": 20})
    result = handle.result(timeout=60)
    assert isinstance(result, ChatResult) and result.content
    assert result.model.model_key == CHAT and result.worker == pool.workers[CHAT].hostname
    assert result.stats.predicted_tokens_count and result.stats.stop_reason
    assert handle.status() == "SUCCESS"


def test_embedding_job(pool: BrokerPool) -> None:
    result = pool.queue.embed(EMBED, ["first text", "second text", "third"]).result(timeout=60)
    assert isinstance(result, EmbeddingResult)
    assert len(result.vectors) == 3 and result.dimension == len(result.vectors[0]) > 0
    assert result.worker == pool.workers[EMBED].hostname


def test_cancel_a_running_chat_keeps_the_partial_text(pool: BrokerPool, sim: object) -> None:
    admin = sim.admin  # type: ignore[attr-defined]
    admin.set_timing(decode_tokens_per_s=20.0)
    admin.set_faults(reply_tokens=2000)  # a long reply: still generating when cancelled
    handle = pool.queue.chat(CHAT, "A long story, please", config={"max_tokens": 2000})
    wait_until(
        lambda: (
            handle.status() == PROGRESS
            and (p := handle.progress()) is not None
            and p.tokens_so_far > 0
        ),
        timeout=60,
        message="tokens generated",
    )
    handle.cancel()  # a revoke broadcast over the broker under test
    wait_until(
        lambda: admin.log(type="channelSend:cancel"),
        timeout=30,
        message="the prediction cancelled at LM Studio",
    )

    def partial_result() -> dict[str, object] | None:
        # The producer may see REVOKED a moment before the worker stored the partial.
        with pytest.raises(JobCancelledError) as cancelled:
            handle.result(timeout=30)
        return cancelled.value.partial

    partial = wait_until(partial_result, timeout=30, message="the stored partial result")
    assert handle.status() == "REVOKED"
    assert partial["cancelled"] and partial["content"]
    assert partial["stats"]["stop_reason"] == "userStopped"  # type: ignore[index]


def test_rabbitmq_redelivers_the_job_of_a_killed_worker(sim: object, results_url: str) -> None:
    """acks_late on RabbitMQ: a SIGKILLed worker's running job is requeued when its
    connection drops, and another worker runs it to the end (attempt 2)."""
    require_rabbitmq(amqp_url())
    admin = sim.admin  # type: ignore[attr-defined]
    admin.set_timing(decode_tokens_per_s=20.0)
    admin.set_faults(reply_tokens=2000)
    with contextlib.ExitStack() as stack:
        broker_url = stack.enter_context(fresh_vhost(amqp_url()))
        env = worker_env(sim, broker_url, results_url)
        first = stack.enter_context(
            _stopping(start_worker(CHAT, env, name=f"doomed-{uuid.uuid4().hex[:6]}"))
        )
        settings = Settings(broker_url=broker_url, result_backend=results_url)
        queue = stack.enter_context(JobQueue(settings))
        handle = queue.chat(CHAT, "Tell me everything", config={"max_tokens": 60})
        wait_until(
            lambda: (
                (p := handle.progress()) is not None
                and p.tokens_so_far > 0
                and p.worker == first.hostname
            ),
            timeout=60,
            message="the job generating",
        )
        first.kill()  # SIGKILL: no ack, no warm shutdown
        second = stack.enter_context(
            _stopping(start_worker(CHAT, env, name=f"heir-{uuid.uuid4().hex[:6]}"))
        )
        result = handle.result(timeout=120)
        assert isinstance(result, ChatResult) and handle.status() == "SUCCESS"
        assert result.worker == second.hostname and result.attempt == 2
        assert result.stats.predicted_tokens_count == 60


def test_rabbitmq_worker_takes_high_before_normal_before_low(sim: object,
                                                             results_url: str) -> None:
    """Priority queues on RabbitMQ: jobs queued while no worker runs (interleaved, the least
    urgent first) start high, high, normal, normal, low, low on one worker that runs one job
    at a time (concurrency 1, prefetch 1), whatever their arrival order."""
    require_rabbitmq(amqp_url())
    with contextlib.ExitStack() as stack:
        broker_url = stack.enter_context(fresh_vhost(amqp_url()))
        env = worker_env(sim, broker_url, results_url, LMQ_CONCURRENCY="1")
        settings = Settings(broker_url=broker_url, result_backend=results_url,
                            redis_url=results_url)
        queue = stack.enter_context(JobQueue(settings))
        handles = {}
        for n in range(2):
            for priority in ("low", "normal", "high"):
                handles[f"{priority}{n}"] = queue.chat(
                    CHAT, f"{priority} job {n}", config={"max_tokens": 3}, priority=priority,
                    enqueue_anyway=True)
        stack.enter_context(_stopping(start_worker(CHAT, env,
                                                   name=f"prio-{uuid.uuid4().hex[:6]}")))
        results = {name: handle.result(timeout=120) for name, handle in handles.items()}
        order = sorted(results, key=lambda name: results[name].timing.started_at)
        assert order == ["high0", "high1", "normal0", "normal1", "low0", "low1"]
