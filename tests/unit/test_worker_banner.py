"""The worker's start-up banner shows the broker URL as configured (issue 23: kombu showed
`workers.delivery.held_transport:Transport://:**@127.0.0.1:...`, a masked password where none
was set)."""

from __future__ import annotations

import pytest
from celery._state import _set_task_join_will_block
from celery.app.trace import reset_worker_optimizations

from workers.celery import create_app
from workers.settings import Settings


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:secret@127.0.0.1:6379/0", "redis://:**@127.0.0.1:6379/0"),
])
def test_banner_shows_the_broker_url_and_masks_only_a_real_password(url: str, shown: str
                                                                   ) -> None:
    app = create_app(Settings(broker_url=url, result_backend=url))
    app.conf.broker_transport = "workers.delivery.held_transport:Transport"  # as celeryd_init
    try:
        banner = app.Worker(hostname="banner@test", loglevel="INFO").startup_info(
            artlines=False)
    finally:
        # Building a WorkController marks this process as a worker (Celery then refuses
        # result.get() "within a task"): undo it, or later tests in this process fail.
        _set_task_join_will_block(False)
        reset_worker_optimizations(app)
    line = next(line for line in banner.splitlines() if "transport:" in line)
    assert line.split("transport:")[1].strip() == shown
    assert "secret" not in banner
