"""Cancel watcher, terminate-capable pool, revoked-set bounds, app configuration (no network)."""

from __future__ import annotations

import threading

import pytest
from celery.worker import state as worker_state

from tests.support.wait import wait_until
from workers.delivery import cancel
from workers.delivery.cancel import CancelToken, CancelWatcher
from workers.delivery.pool import ApplyResult, CancellingRequest, TaskPool


@pytest.fixture()
def watcher():  # type: ignore[no-untyped-def]
    w = CancelWatcher(poll_s=0.01)
    yield w
    w.stop()


def test_token_runs_action_once_and_fires_late_attached_actions() -> None:
    calls: list[str] = []
    token = CancelToken("j")
    token.fire()
    token.fire()
    token.attach(lambda: calls.append("late"))  # the cancel came before the stream started
    assert calls == ["late"] and token.is_requested() and token.requested_at


def test_watcher_fires_tokens_of_revoked_running_jobs(watcher) -> None:  # type: ignore[no-untyped-def]
    fired = threading.Event()
    with watcher.watch("job-a") as token_a, watcher.watch("job-b") as token_b:
        token_a.attach(fired.set)
        worker_state.revoked.add("job-a")
        try:
            wait_until(fired.is_set, timeout=5, message="cancel action")
            assert not token_b.is_requested()
        finally:
            worker_state.revoked.discard("job-a")
    assert watcher.running() == []


def test_job_revoked_before_watch_is_requested_at_once(watcher) -> None:  # type: ignore[no-untyped-def]
    worker_state.revoked.add("job-c")
    try:
        with watcher.watch("job-c") as token:
            assert token.is_requested()
    finally:
        worker_state.revoked.discard("job-c")


def test_watcher_survives_a_failing_cancel(watcher) -> None:  # type: ignore[no-untyped-def]
    def boom() -> None:
        raise RuntimeError("socket gone")
    with watcher.watch("job-d") as token:
        token.attach(boom)
        worker_state.revoked.add("job-d")
        try:
            wait_until(token.is_requested, timeout=5, message="fired")
        finally:
            worker_state.revoked.discard("job-d")
    fired = threading.Event()
    with watcher.watch("job-e") as token:
        token.attach(fired.set)
        worker_state.revoked.add("job-e")
        try:
            wait_until(fired.is_set, timeout=5, message="watcher still alive")
        finally:
            worker_state.revoked.discard("job-e")


def test_terminate_paths_only_wake_the_watcher(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    woken: list[bool] = []
    monkeypatch.setattr(cancel, "wake", lambda: woken.append(True))
    pool = TaskPool(limit=1)
    try:
        pool.terminate_job(1234, 15)  # Celery's threads pool raises NotImplementedError here
        returned: list[int] = []
        result = pool.on_apply(lambda: 42, args=(), callback=returned.append)
        assert isinstance(result, ApplyResult)
        result.terminate(15)
        result.wait(5)
        assert returned == [42]
        CancellingRequest.terminate(object.__new__(CancellingRequest), pool, 9)
    finally:
        pool.on_stop()
    assert woken == [True, True, True]


def test_revoked_set_is_bounded() -> None:
    maxlen, expires_s = cancel.revoked_set_bounds()
    assert maxlen and maxlen <= 100_000 and expires_s and expires_s <= 24 * 3600


def test_app_config_without_model_imports_light(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from workers.celery import create_app, worker_config
    from workers.settings import Settings

    config = worker_config(Settings(model=None, slots=3, prefetch_threads=2))
    assert config["worker_pool"] == "workers.delivery.pool:TaskPool"
    assert config["worker_concurrency"] == 5
    assert config["task_track_started"] is False  # STARTED comes from workers.delivery.result_store
    assert "task_queues" not in config
    app = create_app(Settings(model="llama-3.2-1b-instruct", concurrency=6))
    assert [q.name for q in app.conf.task_queues] == ["lmq.llama-3.2-1b-instruct"]
    assert app.conf.worker_concurrency == 6 and app.conf.task_acks_late
    assert "workers.lifecycle:LMStudioStep" in app.steps["worker"]
