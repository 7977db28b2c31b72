"""Redis over TLS (`rediss://`): a redis-server with a self-signed certificate (openssl),
a worker and a producer that verify it through `ssl_ca_certs`.

    LMQ_BROKER_URL='rediss://:PASSWORD@host:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/lmq/ca.pem'

Skipped (failed in CI) when the redis-server binary was built without TLS or openssl is
missing.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from producers.redis_server import find_redis_server, free_port
from tests.faults.support import LLM, job_queue
from tests.integration.test_tenant_purge import purge
from tests.support.services import missing_service
from workers import keys, waiting
from workers.contract import queue_name

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]
PASSWORD = "tls-pw-0e9a"


def make_cert(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        missing_service("openssl not found: cannot make a self-signed certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True, timeout=60)
    return cert, key


@pytest.fixture()
def tls_redis(tmp_path: Path) -> Iterator[str]:
    cert, key = make_cert(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
         str(cert), "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "",
         "--dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = (f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required"
           f"&ssl_ca_certs={quote(str(cert))}")
    try:
        deadline = time.monotonic() + 10
        while not _answers(url):
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                missing_service(f"redis-server without TLS support: {out[-300:]}")
            if time.monotonic() > deadline:
                pytest.fail("TLS redis-server did not answer")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def test_plain_connection_to_the_tls_port_is_refused(tls_redis: str) -> None:
    plain = tls_redis.replace("rediss://", "redis://").split("?")[0]
    assert not _answers(plain)


def test_jobs_run_over_tls(tls_redis, worker_factory, simulator):  # type: ignore[no-untyped-def]
    env = {"LMQ_BROKER_URL": tls_redis, "LMQ_RESULT_BACKEND": tls_redis,
           "LMQ_LMSTUDIO_HOST": simulator.host, "LMQ_GPU_MEMORY": "24GiB",
           "PYTHONUNBUFFERED": "1"}
    worker = worker_factory(LLM, env)
    with job_queue(tls_redis) as queue:
        result = queue.chat(LLM, "over tls", config={"max_tokens": 4}).result(timeout=60)
    assert result.stats.predicted_tokens_count == 4
    assert PASSWORD not in worker.log_path.read_text(errors="replace")


def test_purge_over_tls_deletes_the_tenants_jobs(tls_redis: str) -> None:
    with job_queue(tls_redis) as queue:
        for tenant in ("big", "small", None):
            queue.chat(LLM, f"{tenant}", config={"max_tokens": 4}, tenant=tenant,
                       enqueue_anyway=True)
    broker = redis.Redis.from_url(tls_redis)
    assert sum(n for by in waiting.counts(broker, LLM).values() for n in by.values()) == 3
    out = purge({"LMQ_BROKER_URL": tls_redis, "LMQ_RESULT_BACKEND": tls_redis},
                "-Q", queue_name(LLM))
    assert "Purged 3 messages" in out, out
    assert sum(n for by in waiting.counts(broker, LLM).values() for n in by.values()) == 0
    assert not broker.keys(keys.tenant_turns("*"))
