"""The worker's SDK event loop and its wait for LM Studio (no network: plain coroutines)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from workers.error import LMStudioUnavailableError
from workers.lmstudio.loop import SdkLoop
from workers.lmstudio.sdk_call import quiet_timeout, sdk_errors


@pytest.fixture()
def sdk_loop():  # type: ignore[no-untyped-def]
    loop = SdkLoop(name="test-sdk-loop")
    yield loop
    loop.stop()


def test_coroutines_run_on_the_loop_thread_not_the_caller(sdk_loop: SdkLoop) -> None:
    async def where() -> str:
        return threading.current_thread().name

    assert sdk_loop.run(where()) == "test-sdk-loop"
    assert not sdk_loop.in_loop()


def test_messages_keep_the_wait_alive_and_silence_ends_it(sdk_loop: SdkLoop) -> None:
    """Talking every 0.2 s for 1.5 s outlives a 0.6 s timeout (between messages, like the
    sync SDK's); then 0.6 s of silence ends it as LMStudioUnavailableError."""

    async def stream() -> float:
        started = time.monotonic()
        async with quiet_timeout(0.6) as heard:
            while time.monotonic() - started < 1.5:
                await asyncio.sleep(0.2)
                heard()
            await asyncio.sleep(5)  # LM Studio goes quiet
        return time.monotonic() - started

    started = time.monotonic()
    with pytest.raises(LMStudioUnavailableError, match="no message from LM Studio in time"), \
            sdk_errors("chat prediction"):
        sdk_loop.run(stream())
    assert 1.5 < time.monotonic() - started < 3.0


def test_stop_ends_the_thread(sdk_loop: SdkLoop) -> None:
    sdk_loop.stop()
    assert not sdk_loop._thread.is_alive()


def test_the_loop_is_uvloops_where_it_is_installed(sdk_loop: SdkLoop) -> None:
    """The SDK's messages are read on libuv's loop (less CPU per message), asyncio's where
    uvloop is missing (Windows)."""
    try:
        import uvloop
    except ImportError:
        assert type(sdk_loop.loop).__module__.startswith("asyncio")
    else:
        assert isinstance(sdk_loop.loop, uvloop.Loop)
