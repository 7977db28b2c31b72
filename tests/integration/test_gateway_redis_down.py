"""The gateway with its Redis gone: a 503 that says so (with Retry-After), not a 500."""

from __future__ import annotations

import openai
import pytest

from producers.gateway.server import serve_in_thread
from producers.redis_server import RedisServer
from workers.settings import Settings

CHAT = "llama-3.2-1b-instruct"


def test_a_request_while_redis_is_down_is_503_saying_so() -> None:
    server = RedisServer().start()
    try:
        settings = Settings(broker_url=server.url, result_backend=server.url)
        with serve_in_thread(settings) as base_url, \
                openai.OpenAI(base_url=base_url, api_key="none", max_retries=0) as client:
            server.stop()
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(
                    model=CHAT, messages=[{"role": "user", "content": "Hello"}], max_tokens=4)
    finally:
        server.stop()
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"]
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "redis_unavailable"
    assert "Redis did not answer" in error["message"] and "retry later" in error["message"]
