"""Core protocol through the real SDK: info, predict, tokens, templates, clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import gguf
import lmstudio as lms
import pytest

from simulator.testing import RunningSimulator
from tests.simulator.conftest import BIG_LLM_KEY, EMBED_KEY, LLM_KEY

pytestmark = pytest.mark.timeout(30)


def test_list_loaded_and_downloaded(client: lms.Client) -> None:
    assert [m.identifier for m in client.llm.list_loaded()] == [LLM_KEY]
    assert [m.identifier for m in client.embedding.list_loaded()] == [EMBED_KEY]
    keys = {m.model_key for m in client.list_downloaded_models()}
    assert keys == {LLM_KEY, BIG_LLM_KEY, EMBED_KEY}


def test_model_info_points_at_real_gguf(simulator: RunningSimulator, client: lms.Client) -> None:
    info = client.llm.model(LLM_KEY).get_info()
    assert info.context_length == 4096 and info.max_context_length == 131072
    assert not Path(info.path).is_absolute()  # relative to the models folder, as LM Studio
    reader = gguf.GGUFReader(Path(simulator.admin.state()["modelsDir"]) / info.path)
    fields = {f.name: f.contents() for f in reader.fields.values()}
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == 16
    assert fields["llama.attention.head_count_kv"] == 8
    assert fields["llama.attention.key_length"] == 64


def test_respond_is_deterministic_with_full_stats(client: lms.Client) -> None:
    model = client.llm.model(LLM_KEY)
    first = model.respond("Tell me about queues")
    second = model.respond("Tell me about queues")
    other = model.respond("Something else entirely")
    assert first.content == second.content != other.content
    stats = first.stats
    assert stats.stop_reason == "eosFound"
    assert 8 <= stats.predicted_tokens_count <= 40
    assert stats.predicted_tokens_count == model.count_tokens(first.content)
    assert stats.total_tokens_count == stats.prompt_tokens_count + stats.predicted_tokens_count
    assert stats.tokens_per_second > 0 and stats.time_to_first_token_sec >= 0
    assert stats.num_gpu_layers == 16
    assert first.model_info.model_key == LLM_KEY


def test_prompt_tokens_match_template_and_tokenizer(client: lms.Client) -> None:
    model = client.llm.model(LLM_KEY)
    chat = lms.Chat("You are terse.")
    chat.add_user_message("Hello, world!")
    formatted = model.apply_prompt_template(chat)
    result = model.respond(chat)
    assert result.stats.prompt_tokens_count == model.count_tokens(formatted)
    assert len(model.tokenize("Hello, world!")) == model.count_tokens("Hello, world!") == 4
    assert model.tokenize("same words") == model.tokenize("same words")


def test_max_tokens_and_stop_strings(client: lms.Client) -> None:
    model = client.llm.model(LLM_KEY)
    capped = model.respond("Count things", config={"maxTokens": 3})
    assert capped.stats.stop_reason == "maxPredictedTokensReached"
    assert capped.stats.predicted_tokens_count == 3 == model.count_tokens(capped.content)
    full = model.respond("Stop somewhere")
    stop = full.content.split()[3]
    stopped = model.respond("Stop somewhere", config={"stopStrings": [stop]})
    assert stopped.stats.stop_reason == "stopStringFound"
    assert stopped.content == full.content[: full.content.index(stop)]


def test_completion_mode(client: lms.Client) -> None:
    model = client.llm.model(LLM_KEY)
    completed = model.complete("Once upon a time", config={"maxTokens": 5})
    chatted = model.respond("Once upon a time", config={"maxTokens": 5})
    assert completed.stats.prompt_tokens_count == 4  # raw text, no template
    assert chatted.stats.prompt_tokens_count > 4
    assert completed.content != chatted.content


def test_prompt_over_context_length_fails(client: lms.Client) -> None:
    model = client.llm.model(LLM_KEY)
    with pytest.raises(lms.LMStudioPredictionError, match="greater than the context length"):
        model.respond("word " * 5000)


def test_load_config_round_trip(client: lms.Client) -> None:
    config = client.llm.model(LLM_KEY).get_load_config()
    assert config.context_length == 4096
    assert config.gpu is not None and config.gpu.ratio == 1.0


@pytest.mark.timeout(30)
def test_async_client(simulator: RunningSimulator) -> None:
    async def main() -> list[str]:
        async with lms.AsyncClient(simulator.host) as client:
            model = await client.llm.model(LLM_KEY)
            results = await asyncio.gather(*(model.respond(f"q{i}") for i in range(6)))
            embedder = await client.embedding.model(EMBED_KEY)
            assert len(await embedder.embed("hi")) == 768
            return [r.content for r in results]

    contents = asyncio.run(main())
    assert len(set(contents)) == 6


def test_convenience_api(simulator: RunningSimulator) -> None:
    # The default client is process-global; the SDK's own reset hook puts it back.
    lms.sync_api._reset_default_client()
    try:
        lms.configure_default_client(simulator.host)
        assert lms.llm(LLM_KEY).respond("hi").stats.stop_reason == "eosFound"
        assert len(lms.embedding_model(EMBED_KEY).embed("hi")) == 768
        assert len(lms.list_loaded_models()) == 2
    finally:
        lms.sync_api._reset_default_client()


def test_image_upload_and_chat_with_image(simulator_factory) -> None:  # type: ignore[no-untyped-def]
    sim = simulator_factory({"models": {LLM_KEY: {"vision": True}}})
    with lms.Client(sim.host) as client:
        handle = client.prepare_image(b"\x89PNG\r\n\x1a\n" + b"0" * 100, name="x.png")
        assert handle.file_type == "image" and handle.size_bytes == 108
        chat = lms.Chat()
        chat.add_user_message("What is in this picture?", images=[handle])
        assert client.llm.model(LLM_KEY).respond(chat).stats.stop_reason == "eosFound"
