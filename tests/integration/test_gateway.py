"""`lmq serve` with the official `openai` client: a real uvicorn server in a thread, real
Redis, real `celery -A workers worker` processes, the simulator as LM Studio."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from pydantic import SecretStr

from producers.gateway.server import serve_in_thread
from producers.local_pool import LocalPool
from producers.redis_server import RedisServer
from tests.support.pool import pool_on_database
from tests.support.vision import VISION, simulator_with_vision
from tests.support.wait import wait_until

CHAT = "llama-3.2-1b-instruct"
EMBED = "text-embedding-nomic-embed-text-v1.5"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")
KEY = "sk-test-team-a"
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def sim() -> Iterator[object]:
    """The default simulator plus a loaded vision model (as LM Studio lists one)."""
    with simulator_with_vision(in_process=False) as running:
        yield running


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, sim: object) -> Iterator[LocalPool]:
    with pool_on_database(redis_server, sim, 12, [CHAT, EMBED, VISION]) as started:
        yield started


@pytest.fixture(scope="module")
def base_url(pool: LocalPool) -> Iterator[str]:
    # The image links of these tests point at a loopback server: allowed here, refused by
    # default (test_image_links_to_internal_addresses_are_refused_by_default).
    settings = pool.settings.model_copy(update={"api_keys": SecretStr(f"{KEY}=team-a:high"),
                                                "gateway_fetch_private_images": True})
    with serve_in_thread(settings) as url:
        yield url


@pytest.fixture()
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0) as made:
        yield made


@pytest.fixture(autouse=True)
def fresh_sim(sim: object) -> Iterator[None]:
    admin = sim.admin  # type: ignore[attr-defined]
    admin.reset()
    admin.set_timing(decode_tokens_per_s=200.0)
    yield
    admin.reset()


def test_models_lists_what_live_workers_serve(client: openai.OpenAI) -> None:
    assert sorted(m.id for m in client.models.list()) == sorted([CHAT, EMBED, VISION])
    assert client.models.retrieve(EMBED).id == EMBED
    with pytest.raises(openai.NotFoundError, match=CHAT):
        client.models.retrieve("gpt-4o")


def test_with_keys_any_host_name_reaches_the_gateway(base_url: str) -> None:
    """The Host guard is for the no-key mode only: with keys, a key lets a request in."""
    health = httpx.get(base_url.removesuffix("/v1") + "/health", timeout=5,
                       headers={"Host": "gateway.example:8000"})
    assert health.status_code == 200, health.text


def test_chat_completion_with_stats(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Hello there"}],
        max_tokens=20, temperature=0.2, top_p=0.9, seed=7, stop=["\n\n"])
    assert reply.object == "chat.completion" and reply.model == CHAT
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
    stats = reply.model_extra["lmq_stats"]["stats"]
    assert stats["tokens_per_second"] > 0 and stats["stop_reason"]


def test_streaming_chunks_and_final_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Tell me a story"}],
        max_completion_tokens=30, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].model_extra["lmq_stats"]["stats"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    whole = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Tell me a story"}], max_tokens=30)
    assert text == whole.choices[0].message.content  # the simulator is deterministic


def test_completion_and_its_stream(client: openai.OpenAI) -> None:
    done = client.completions.create(model=CHAT, prompt="The sky is", max_tokens=10)
    assert done.object == "text_completion" and done.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=CHAT, prompt="The sky is", max_tokens=10, stream=True) if c.choices)
    assert streamed == done.choices[0].text


ECHO_TOOL = {"type": "function", "function": {
    "name": "echo", "description": "Echo a text back.",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}},
                   "required": ["text"]}}}


def test_tools_come_back_as_tool_calls(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Please echo 'hello' back to me."}],
        tools=[ECHO_TOOL], tool_choice="auto", max_tokens=100)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "echo" and "text" in json.loads(call.function.arguments)
    # the tool's answer goes back in, as OpenAI clients send it
    follow = client.chat.completions.create(model=CHAT, max_tokens=30, tools=[ECHO_TOOL], messages=[
        {"role": "user", "content": "Please echo 'hello' back to me."},
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "HELLO"}])
    assert follow.choices[0].message.content or follow.choices[0].message.tool_calls
    none = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Please echo 'hello' back to me."}],
        tools=[ECHO_TOOL], tool_choice="none", max_tokens=20)
    assert not none.choices[0].message.tool_calls


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def tools_setting(sim: object, marker: str) -> dict:
    """The tool-use setting LM Studio got for the prediction whose prompt has `marker`."""
    for entry in sim.admin.log(type="channelCreate"):  # type: ignore[attr-defined]
        param = entry["msg"].get("creationParameter") or {}
        if entry["msg"].get("endpoint") == "predict" and marker in json.dumps(param):
            stack = param["predictionConfigStack"]
            fields = {f["key"]: f.get("value") for layer in stack["layers"]
                      for f in layer["config"]["fields"]}
            return fields.get("llm.prediction.tools") or {}
    raise AssertionError(f"no prediction with {marker!r} reached the simulator")


def test_tool_choice_required_and_named_are_forced_by_lm_studio(client: openai.OpenAI,
                                                                 sim: object) -> None:
    def ask(choice, marker):  # type: ignore[no-untyped-def]
        return client.chat.completions.create(
            model=CHAT, tools=[ECHO_TOOL, WEATHER_TOOL], tool_choice=choice, max_tokens=60,
            messages=[{"role": "user", "content": f"Tell me a story about the sea ({marker})"}])

    auto = ask("auto", "choice-auto")  # nothing asks for a tool: the model answers in text
    assert not auto.choices[0].message.tool_calls and auto.choices[0].finish_reason != "tool_calls"
    assert not tools_setting(sim, "choice-auto").get("force")

    required = ask("required", "choice-required")
    assert required.choices[0].finish_reason == "tool_calls"
    assert required.choices[0].message.tool_calls[0].function.name in ("echo", "get_weather")
    setting = tools_setting(sim, "choice-required")
    assert setting["force"] is True and len(setting["tools"]) == 2

    named = ask({"type": "function", "function": {"name": "get_weather"}}, "choice-named")
    call = named.choices[0].message.tool_calls[0]
    assert named.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    setting = tools_setting(sim, "choice-named")
    assert setting["force"] is True
    assert [t["function"]["name"] for t in setting["tools"]] == ["get_weather"]

    subset = ask({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}]}}, "choice-allowed")
    assert subset.choices[0].message.tool_calls[0].function.name == "get_weather"

    streamed = list(client.chat.completions.create(
        model=CHAT, tools=[ECHO_TOOL, WEATHER_TOOL], max_tokens=60, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "Tell me a story about the sea"}]))
    calls = [c for chunk in streamed if chunk.choices
             for c in chunk.choices[0].delta.tool_calls or []]
    assert [c.function.name for c in calls] == ["get_weather"]


def test_tool_choice_lm_studio_cannot_honour_is_400_naming_it(client: openai.OpenAI) -> None:
    def ask(choice, tools=(ECHO_TOOL,)):  # type: ignore[no-untyped-def]
        return client.chat.completions.create(
            model=CHAT, tools=list(tools), tool_choice=choice, max_tokens=5,
            messages=[{"role": "user", "content": "hi"}])

    with pytest.raises(openai.BadRequestError, match="'custom' is not supported") as caught:
        ask({"type": "custom", "custom": {"name": "echo"}})
    assert caught.value.param == "tool_choice"
    with pytest.raises(openai.BadRequestError, match="'nope', which is not in tools"):
        ask({"type": "function", "function": {"name": "nope"}})
    with pytest.raises(openai.BadRequestError, match="needs tools"):
        ask("required", tools=())
    with pytest.raises(openai.BadRequestError, match="'always' is not supported"):
        ask("always")


def test_structured_output_follows_the_schema(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "A person, as JSON"}], max_tokens=80,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": schema, "strict": True}})
    data = json.loads(reply.choices[0].message.content)
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_embeddings_as_floats_and_base64(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model=EMBED, input=["one text", "another text"],
                                      encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1] and floats.usage.total_tokens > 0
    single = client.embeddings.create(model=EMBED, input="one text", encoding_format="float")
    assert single.data[0].embedding == floats.data[0].embedding
    # the client's default asks for base64 and decodes it to floats itself
    packed = client.embeddings.create(model=EMBED, input="one text")
    assert packed.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-6)
    raw = client.embeddings.with_raw_response.create(model=EMBED, input="one text",
                                                     encoding_format="base64")
    encoded = json.loads(raw.http_response.text)["data"][0]["embedding"]
    values = struct.unpack(f"<{len(floats.data[0].embedding)}f", base64.b64decode(encoded))
    assert list(values) == pytest.approx(floats.data[0].embedding, rel=1e-6)


def test_image_parts_reach_a_vision_model(client: openai.OpenAI, sim: object) -> None:
    marker = "describe-gateway-image"
    url = f"data:image/png;base64,{base64.b64encode(PNG).decode()}"
    content = [{"type": "text", "text": marker},
               {"type": "image_url", "image_url": {"url": url}}]
    reply = client.chat.completions.create(model=VISION, max_tokens=8,
                                           messages=[{"role": "user", "content": content}])
    assert reply.choices[0].message.content
    sent = [e["msg"]["creationParameter"]["history"]["messages"][-1]["content"]
            for e in sim.admin.log(type="channelCreate")  # type: ignore[attr-defined]
            if e["msg"].get("endpoint") == "predict" and marker in str(e["msg"])]
    assert sent and sent[0][0] == {"type": "text", "text": marker}
    assert sent[0][1]["type"] == "file" and sent[0][1]["fileType"] == "image"
    assert sent[0][1]["sizeBytes"] == len(PNG)


def test_images_for_other_models_or_as_paths_are_400(client: openai.OpenAI) -> None:
    url = f"data:image/png;base64,{base64.b64encode(PNG).decode()}"
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": url}}]
    # the chat model has no vision: the pool refuses the image, as a 400
    with pytest.raises(openai.BadRequestError, match="vision"):
        client.chat.completions.create(model=CHAT, max_tokens=5,
                                       messages=[{"role": "user", "content": content}])
    for link in ("/etc/passwd", "file:///etc/passwd"):
        part = {"type": "image_url", "image_url": {"url": link}}
        with pytest.raises(openai.BadRequestError, match="data URLs .* or http"):
            client.chat.completions.create(model=VISION, max_tokens=5, messages=[
                {"role": "user", "content": [part]}])


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """A real HTTP server in a thread: /cat.png (PNG), /page.html, /huge.png (declares
    more bytes than an image may have), anything else 404."""
    import http.server
    import threading

    from producers.gateway.image_links import MAX_IMAGE_BYTES

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            found = {"/cat.png": ("image/png", PNG),
                     "/page.html": ("text/html", b"<p>no</p>")}.get(self.path)
            if self.path == "/moved.png":
                self.send_response(302)
                self.send_header("Location", "/cat.png")
                self.end_headers()
                return
            if self.path == "/huge.png":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(MAX_IMAGE_BYTES + 1))
                self.end_headers()
                return
            if found is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", found[0])
            self.send_header("Content-Length", str(len(found[1])))
            self.end_headers()
            self.wfile.write(found[1])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_image_links_are_downloaded_for_the_model(client: openai.OpenAI, sim: object,
                                                   image_server: str) -> None:
    marker = "describe-linked-image"
    for path in ("/cat.png", "/moved.png"):  # a redirect is followed
        content = [{"type": "text", "text": f"{marker} {path}"},
                   {"type": "image_url", "image_url": {"url": image_server + path}}]
        reply = client.chat.completions.create(model=VISION, max_tokens=8,
                                               messages=[{"role": "user", "content": content}])
        assert reply.choices[0].message.content
        sent = [e["msg"]["creationParameter"]["history"]["messages"][-1]["content"]
                for e in sim.admin.log(type="channelCreate")  # type: ignore[attr-defined]
                if e["msg"].get("endpoint") == "predict" and f"{marker} {path}" in str(e["msg"])]
        assert sent and sent[0][1]["type"] == "file" and sent[0][1]["fileType"] == "image"
        assert sent[0][1]["sizeBytes"] == len(PNG)  # the very bytes the server served


def test_image_links_to_internal_addresses_are_refused_by_default(pool: LocalPool,
                                                                  image_server: str) -> None:
    """SSRF: by default a link whose host is loopback is a 400 saying why."""
    settings = pool.settings.model_copy(update={"api_keys": SecretStr(f"{KEY}=team-a:high")})
    url = image_server + "/cat.png"
    part = {"type": "image_url", "image_url": {"url": url}}
    with serve_in_thread(settings) as base, \
            openai.OpenAI(base_url=base, api_key=KEY, max_retries=0) as client, \
            pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=VISION, max_tokens=5, messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi"}, part]}])
    message = caught.value.message
    assert f"cannot use the image at {url}: 127.0.0.1 resolves to 127.0.0.1, a loopback " \
           "address" in message, message
    assert "LMQ_GATEWAY_FETCH_PRIVATE_IMAGES=true" in message


def test_an_image_link_that_cannot_be_used_is_400_naming_it(client: openai.OpenAI,
                                                             image_server: str) -> None:
    cases = {image_server + "/missing.png": "HTTP 404",
             image_server + "/page.html": "not an image (content-type 'text/html')",
             image_server + "/huge.png": "over the limit of",
             f"http://127.0.0.1:{_closed_port()}/cat.png": "ConnectError"}
    for url, reason in cases.items():
        part = {"type": "image_url", "image_url": {"url": url}}
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=VISION, max_tokens=5, messages=[
                {"role": "user", "content": [{"type": "text", "text": "hi"}, part]}])
        message = caught.value.message
        assert f"messages[0].content[1]: cannot use the image at {url}" in message, message
        assert reason in message, message


def _closed_port() -> int:
    """A loopback port nothing listens on (bound for a moment, then closed)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_answers_wait_on_one_subscription_that_survives_a_lost_connection(
        client: openai.OpenAI, pool: LocalPool) -> None:
    import redis

    server = redis.Redis.from_url(pool.settings.backend_url)

    def feeds() -> list[dict]:  # the gateway's pub/sub connections (named lmq-gateway)
        return [c for c in server.client_list()
                if c.get("name") == "lmq-gateway" and int(c.get("sub", 0)) > 0]

    def ask(text: str) -> str:
        return client.chat.completions.create(
            model=CHAT, max_tokens=4, messages=[{"role": "user", "content": text}]).id

    for i in range(5):
        ask(f"hello {i}")
    assert len(feeds()) == 1  # one for every wait, not one per request
    for feed in feeds():
        server.client_kill_filter(_id=feed["id"])
    started = time.monotonic()
    ask("after the kill")
    assert time.monotonic() - started < 5  # re-reads cover the gap; no hung request
    wait_until(lambda: len(feeds()) == 1, timeout=10, message="the feed reconnected")
    started = time.monotonic()
    ask("reconnected")
    assert time.monotonic() - started < 5


def test_bad_keys_are_401(base_url: str) -> None:
    for key in ("sk-wrong", ""):
        with openai.OpenAI(base_url=base_url, api_key=key or "x", max_retries=0) as bad, \
                pytest.raises(openai.AuthenticationError) as caught:
            bad.models.list()
        assert caught.value.code == "invalid_api_key"
    reply = httpx.get(base_url + "/models")  # no Authorization header at all
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key"


def test_unknown_model_is_404_naming_the_served_ones(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user",
                                                                   "content": "hi"}])
    assert caught.value.code == "model_not_found"
    assert CHAT in caught.value.message and EMBED in caught.value.message


def test_bad_input_is_400_saying_what_to_fix(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=CHAT, messages=[])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=CHAT, temperature=-1,
                                       messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(model=CHAT, n=2,
                                       messages=[{"role": "user", "content": "hi"}])


def test_known_model_without_a_live_worker_is_503(client: openai.OpenAI,
                                                  pool: LocalPool) -> None:
    idle = "qwen2.5-7b-instruct"  # known to the pool: a job waits in its queue, no worker
    waiting = pool.queue.chat(idle, "hi", enqueue_anyway=True)
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model=idle, messages=[{"role": "user",
                                                                  "content": "hi"}])
    finally:
        pool.queue.cancel_model(idle)
    assert caught.value.status_code == 503 and caught.value.code == "model_not_served"
    assert int(caught.value.response.headers["retry-after"]) > 0
    assert f"LMQ_MODEL={idle} celery -A workers worker" in caught.value.message
    assert waiting.status() == "REVOKED"


def test_full_queue_is_503_with_retry_after(pool: LocalPool, sim: object) -> None:
    from workers.metrics import queue_length

    sim.admin.set_timing(decode_tokens_per_s=2.0)  # type: ignore[attr-defined]
    settings = pool.settings.model_copy(update={"api_keys": SecretStr(f"{KEY}=team-a"),
                                               "max_queued": 1})
    broker = pool.queue.publisher.broker
    # More long jobs than the worker's threads take: the rest wait in the queue.
    handles = [pool.queue.chat(CHAT, "Write a long story", config={"max_tokens": 400})
               for _ in range(12)]
    try:
        wait_until(lambda: queue_length(broker, CHAT) >= 2, timeout=30,
                   message="jobs waiting in the queue")
        with serve_in_thread(settings) as url, \
                openai.OpenAI(base_url=url, api_key=KEY, max_retries=0) as limited, \
                pytest.raises(openai.APIStatusError) as caught:
            limited.chat.completions.create(model=CHAT, messages=[{"role": "user",
                                                                   "content": "hi"}])
    finally:
        pool.queue.cancel_model(CHAT)
    assert caught.value.status_code == 503 and caught.value.code == "queue_full"
    assert int(caught.value.response.headers["retry-after"]) > 0
    assert "LMQ_MAX_QUEUED=1" in caught.value.message
    wait_until(lambda: all(h.finished() for h in handles), timeout=60,
               message="the cancelled jobs to end")


def test_client_disconnect_cancels_the_job(base_url: str, sim: object) -> None:
    admin = sim.admin  # type: ignore[attr-defined]
    admin.set_timing(decode_tokens_per_s=10.0)

    def predicting(marker: str) -> bool:
        return marker in json.dumps(admin.log(type="channelCreate"))

    async def leave_mid_request(stream: bool, marker: str) -> None:
        body = {"model": CHAT, "max_tokens": 400, "stream": stream,
                "messages": [{"role": "user", "content": f"Write a long story ({marker})"}]}
        async with httpx.AsyncClient(base_url=base_url,
                                     headers={"Authorization": f"Bearer {KEY}"}) as http:
            task = asyncio.ensure_future(http.post("/chat/completions", json=body))
            await asyncio.to_thread(wait_until, lambda: predicting(marker), 30, 0.05,
                                    "the request's prediction at the simulator")
            task.cancel()  # closes the connection mid-request
            await asyncio.gather(task, return_exceptions=True)

    for stream in (False, True):
        admin.clear_log()
        marker = f"disconnect-test-stream-{stream}"
        asyncio.run(leave_mid_request(stream, marker))
        cancels = wait_until(lambda: admin.log(type="channelSend:cancel"), timeout=30,
                             message=f"the cancel at the simulator (stream={stream})")
        assert len(cancels) == 1
        stopped = wait_until(lambda: admin.log(type="channelSend:success"), timeout=30,
                             message="the cancelled prediction's end")
        assert "userStopped" in json.dumps(stopped)


def test_health_metrics_and_docs(base_url: str, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=CHAT, max_tokens=4,
                                   messages=[{"role": "user", "content": "hi"}])
    root = base_url.removesuffix("/v1")
    health = httpx.get(root + "/health").json()
    assert health["status"] == "ok" and sorted(health["models"]) == sorted([CHAT, EMBED,
                                                                            VISION])
    assert httpx.get(root + "/metrics").status_code == 401
    metrics = httpx.get(root + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert f'lmq_jobs_finished_total{{model="{CHAT}",outcome="succeeded"}}' in metrics
    spec = httpx.get(root + "/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/files", "/v1/batches/{batch_id}/cancel"} \
        <= set(spec["paths"])
    assert httpx.get(root + "/docs").status_code == 200


def test_streamed_tool_calls(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Please echo 'hello' back to me."}],
        tools=[ECHO_TOOL], max_tokens=100, stream=True))
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].function.name == "echo"
    assert json.loads(calls[0].function.arguments)["text"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Please echo 'hello' back to me."}],
        tools=[ECHO_TOOL], max_tokens=100)
    assert text == (whole.choices[0].message.content or "")


def test_a_request_runs_as_a_job_of_the_keys_tenant_and_priority(
        client: openai.OpenAI, pool: LocalPool) -> None:
    import redis

    from producers import job_registry

    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Hello"}], max_tokens=4)
    job_id = reply.id.removeprefix("chatcmpl-")
    entry = job_registry.lookup(redis.Redis.from_url(pool.settings.store_url), job_id)
    assert entry is not None
    assert (entry["tenant"], entry["priority"]) == ("team-a", "high")  # KEY=team-a:high


def test_requests_jobs_are_announced_as_sent_for_flower(base_url: str,
                                                        pool: LocalPool) -> None:
    """The gateway publishes from its event loop and sends the `task-sent` events after:
    every job still gets one (Flower shows it queued), with its shortened arguments and
    its queue, also when requests arrive together."""
    from tests.support.event_tap import tapped
    from workers.contract import TASK_CHAT, queue_name

    async def requests() -> list[str]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0) as aclient:
            replies = await asyncio.gather(*(aclient.chat.completions.create(
                model=CHAT, messages=[{"role": "user", "content": f"sent {i}"}], max_tokens=4)
                for i in range(6)))
        return [reply.id.removeprefix("chatcmpl-") for reply in replies]

    with tapped(pool.settings.broker_url) as tap:
        job_ids = asyncio.run(requests())
        wait_until(lambda: all("task-sent" in tap.seen(job_id) for job_id in job_ids),
                   timeout=10, message="a task-sent event for every request's job")
    sent = {e["uuid"]: e for e in tap.events() if e["type"] == "task-sent"}
    for job_id in job_ids:
        assert sent[job_id]["name"] == TASK_CHAT
        assert sent[job_id]["queue"] == queue_name(CHAT)
        assert "sent " in sent[job_id]["args"]
