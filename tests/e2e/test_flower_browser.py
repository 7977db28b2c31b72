"""Flower in a real headless Chromium, while real workers run jobs against the simulator.

Screenshots are kept under artifacts/e2e/ (git-ignored); their paths are printed.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.flower_process import PROJECT_ROOT, FlowerProcess
from tests.e2e.support import (
    AUTH,
    EMBED_MODEL,
    MODEL,
    cancels_sent,
    flower_env,
    job_queue,
    long_replies,
    start_flower,
    wait_backend_state,
    wait_flower_state,
)
from tests.support.services import missing_service
from tests.support.wait import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = PROJECT_ROOT / "artifacts" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture()
def browser() -> Iterator[object]:
    if not (shutil.which("chromium") or Path(CHROMIUM).exists()) or not Path(CHROMEDRIVER).exists():
        missing_service("chromium and chromedriver (ops/setup --browser)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lmq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    send_basic_auth(driver)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture()
def flower(lmq_env, worker_factory, request) -> Iterator[FlowerProcess]:
    env = flower_env(lmq_env)
    worker_factory(MODEL, env)
    started: list[FlowerProcess] = []
    try:  # stopped even if start_flower fails (e.g. it never sees the worker's events)
        yield start_flower(env, started)
    finally:
        for process in started:
            process.stop()
            if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
                print(f"\n--- Flower log tail ---\n{process.log_tail()}")


def authed(flower: FlowerProcess, path: str) -> str:
    return f"{flower.url}{path}"


def send_basic_auth(driver) -> None:
    """Every request of the page (navigation and the buttons' XHR) carries the basic auth."""
    token = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"Authorization": f"Basic {token}"}})


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def page_text(driver) -> str:
    return driver.find_element("tag name", "body").text


def test_tasks_page_and_task_page_show_our_jobs_and_stats(flower, lmq_env, browser):
    queue = job_queue(flower_env(lmq_env))
    handles = [queue.chat(MODEL, f"Hello number {i} " + "pad " * 1000) for i in range(3)]
    results = [h.result(timeout=60) for h in handles]
    for handle in handles:
        wait_flower_state(flower, handle.id, {"SUCCESS"})

    browser.get(authed(flower, "/tasks"))
    wait_until(lambda: all(h.id in page_text(browser) for h in handles), timeout=20,
               message=lambda: f"task ids on the tasks page: {page_text(browser)[:2000]}")
    text = page_text(browser)
    assert "lmq.chat" in text and "SUCCESS" in text
    assert screenshot(browser, "tasks-page").stat().st_size > 0

    browser.get(authed(flower, f"/task/{handles[0].id}"))
    text = page_text(browser)
    stats = results[0].stats
    assert "lmq.chat" in text and "SUCCESS" in text
    assert f"predicted tokens {stats.predicted_tokens_count}" in text
    assert f"ttft {stats.time_to_first_token_s:.3f} s" in text
    assert f"stop {stats.stop_reason}" in text
    assert "pad pad" in text and "pad " * 200 not in text  # arguments shown shortened
    screenshot(browser, "task-page-success")


def test_revoke_button_on_a_running_job_cancels_its_prediction(flower, lmq_env, simulator,
                                                               browser):
    long_replies(simulator)
    handle = job_queue(flower_env(lmq_env)).chat(MODEL, "Tell me a very long story")
    wait_backend_state(handle, {"PROGRESS"})
    wait_flower_state(flower, handle.id, {"STARTED", "PROGRESS"})

    browser.get(authed(flower, f"/task/{handle.id}"))
    assert "PROGRESS" in page_text(browser)  # the running job's state and its progress meta
    assert "progress: phase generating" in page_text(browser)
    screenshot(browser, "task-page-progress")
    browser.find_element("id", "task-revoke").click()
    wait_until(lambda: "Revoked" in page_text(browser), timeout=10,
               message=lambda: f"Flower's confirmation: {page_text(browser)[:600]}")

    wait_until(lambda: cancels_sent(simulator), timeout=20, message="cancel at the simulator")
    wait_backend_state(handle, {"REVOKED"})
    wait_flower_state(flower, handle.id, {"REVOKED"})
    browser.get(authed(flower, f"/task/{handle.id}"))
    text = page_text(browser)
    assert "REVOKED" in text and "CANCELLED, partial result" in text
    assert "stop userStopped" in text
    screenshot(browser, "task-page-revoked")


def test_home_page_shows_the_jobs_waiting_per_model_and_priority(flower, lmq_env, browser):
    """Jobs queued for a model no worker serves wait in its priority lists; Flower's home
    page (Workers) counts them per model and priority, read from Redis at page load."""
    queue = job_queue(flower_env(lmq_env))
    for priority, count in (("high", 2), ("normal", 1), ("low", 3)):
        for n in range(count):
            queue.embed(EMBED_MODEL, f"{priority} {n}", priority=priority, enqueue_anyway=True)

    browser.get(authed(flower, "/"))
    row = browser.find_element("css selector", f'#lmq-waiting-table tr[data-model="{EMBED_MODEL}"]')
    cells = {cell.get_attribute("data-priority"): cell.text
             for cell in row.find_elements("css selector", "td[data-priority]")}
    assert cells == {"high": "2", "normal": "1", "low": "3", "total": "6"}
    served = browser.find_element("css selector", f'#lmq-waiting-table tr[data-model="{MODEL}"]')
    assert served.find_element("css selector", 'td[data-priority="total"]').text == "0"
    assert "Waiting jobs by model and priority" in page_text(browser)
    screenshot(browser, "workers-page-waiting")

    queue.cancel_model(EMBED_MODEL)  # taken out of the queue: the next page load shows 0
    browser.get(authed(flower, "/"))
    row = browser.find_element("css selector", f'#lmq-waiting-table tr[data-model="{EMBED_MODEL}"]')
    assert row.find_element("css selector", 'td[data-priority="total"]').text == "0"
