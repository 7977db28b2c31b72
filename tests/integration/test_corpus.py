"""`lmq embed-corpus` and `lmq search` end to end: real Redis, real workers, the simulator."""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.integration.corpus_support import (
    EMBED,
    SHARED,
    UNICODE_DOC,
    lmq,
    lmq_popen,
    make_corpus,
    rows,
)
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(240)]


@pytest.fixture()
def embed_worker(worker_factory, lmq_env):  # type: ignore[no-untyped-def]
    return worker_factory(EMBED, lmq_env)


def embed_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["embed-corpus", str(corpus), "--model", EMBED, "--out", str(out),
            "--chunk-tokens", "48", "--overlap", "8", "--job-tokens", "200", *extra]


def test_corpus_to_parquet_with_duplicates_unicode_and_empty_file(
        embed_worker, lmq_env, tmp_path):  # type: ignore[no-untyped-def]
    corpus = make_corpus(tmp_path)
    out = tmp_path / "corpus.parquet"
    done = lmq(*embed_args(corpus, out), "--no-progress", env=lmq_env)
    assert "duplicates skipped" in done.stdout and "failures: 0 chunks" in done.stdout
    table = rows(out)
    assert len({r["id"] for r in table}) == len(table) > 10
    for row in table:
        text = _source_text(Path(str(row["source"]).split("#L")[0]), str(row["source"]))
        assert text[row["start"] : row["end"]] == row["text"]  # type: ignore[misc]
        assert row["model"] == EMBED and len(row["vector"]) == 768  # type: ignore[arg-type]
        assert 0 < row["tokens"] <= 48  # type: ignore[operator]
    sources = {Path(str(r["source"]).split("#")[0]).name for r in table}
    assert "empty.txt" not in sources and {"unicode.md", "long.rst", "page.html"} <= sources
    assert [r["text"] for r in table if r["text"] == SHARED] == [SHARED]  # kept once
    dups = [json.loads(line) for line in Path(f"{out}.duplicates.jsonl").read_text().splitlines()]
    assert len(dups) == 2 and all(d["sha256"] == dups[0]["sha256"] for d in dups)
    assert "skipped" in done.stderr and "--text-field" in done.stderr  # the jsonl record
    assert not Path(f"{out}.lmq-state").exists()
    html = [r["text"] for r in table if str(r["source"]).endswith("page.html")]
    assert "alert" not in " ".join(html) and "Zebras cross" in " ".join(html)


def _source_text(path: Path, source: str) -> str:
    if "#L" in source:
        number = int(source.rsplit("#L", 1)[1])
        return json.loads(path.read_text().splitlines()[number - 1])["text"]
    if path.suffix == ".html":
        from producers.corpus._discover import SourceFile
        from producers.corpus._reader import read_documents

        (doc,) = read_documents(SourceFile(path, "html"))
        return "".join(doc.blocks)  # type: ignore[union-attr]
    return path.read_text(encoding="utf-8")


def test_search_returns_the_chunk_sharing_the_query_words_first(
        embed_worker, lmq_env, tmp_path):  # type: ignore[no-untyped-def]
    corpus = make_corpus(tmp_path, long_paragraphs=10)
    out = tmp_path / "c.parquet"
    lmq(*embed_args(corpus, out), "--no-progress", env=lmq_env)
    found = lmq("search", str(out), "zebras savanna river migration", "--model", EMBED,
                "-k", "3", "--json", env=lmq_env)
    hits = json.loads(found.stdout)
    assert len(hits) == 3 and "Zebra" in hits[0]["text"]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    plain = lmq("search", str(out), "quantum lattice cryptography", "--model", EMBED, "-k", "1",
                env=lmq_env)
    assert "records.jsonl#L1" in plain.stdout and "Quantum" in plain.stdout


def test_jsonl_output_and_unicode_offsets(embed_worker, lmq_env, tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "u.md").write_text(UNICODE_DOC, encoding="utf-8")
    out = tmp_path / "u.jsonl"
    lmq(*embed_args(tmp_path / "u.md", out), "--no-progress", env=lmq_env)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines and all(UNICODE_DOC[r["start"] : r["end"]] == r["text"] for r in lines)
    assert abs(np.linalg.norm(lines[0]["vector"]) - 1.0) < 1e-3


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM],
                         ids=["sigkill", "sigint", "sigterm"])
def test_interrupted_run_resumes_to_the_same_output(
        embed_worker, lmq_env, tmp_path, sig):  # type: ignore[no-untyped-def]
    corpus = make_corpus(tmp_path, long_paragraphs=150)
    small_jobs = ("--job-tokens", "60", "--max-in-flight", "1")
    whole = tmp_path / "whole.parquet"
    lmq(*embed_args(corpus, whole, *small_jobs), "--no-progress", env=lmq_env)

    out = tmp_path / "resumed.parquet"
    parts = Path(f"{out}.lmq-state") / "parts"
    run = lmq_popen(*embed_args(corpus, out, *small_jobs), "--no-progress", env=lmq_env)
    wait_until(lambda: parts.exists() and len(list(parts.glob("*.arrow"))) >= 3, timeout=60,
               message="three part files")
    run.send_signal(sig)
    _, stderr = run.communicate(timeout=30)
    assert run.returncode != 0 and not out.exists()
    if sig == signal.SIGINT:
        assert run.returncode == 130 and "--resume" in stderr
    if sig == signal.SIGTERM:  # systemd, docker stop: the same cleanup as Ctrl-C
        assert run.returncode == 143 and "terminated" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    finished_before = len(list(parts.glob("*.arrow")))

    refused = lmq(*embed_args(corpus, out, *small_jobs), env=lmq_env, check=False)
    assert refused.returncode != 0 and "--resume" in refused.stderr
    done = lmq(*embed_args(corpus, out, *small_jobs), "--resume", "--no-progress",
               env=lmq_env)
    reused = int(done.stdout.split("embedded now, ")[1].split(" from")[0])
    assert reused >= finished_before  # at least one chunk per part file written before
    embedded_now = int(done.stdout.split("chunks: ")[1].split("(")[1].split(" embedded")[0])
    assert embedded_now > 0  # only the unfinished rest was sent again
    assert rows(out) == rows(whole)  # row by row, vectors included


def test_a_worker_killed_during_the_run_loses_no_chunk(
        worker_factory, lmq_env, simulator, tmp_path):  # type: ignore[no-untyped-def]
    simulator.admin.set_timing(embedding_latency_s=0.05)
    # The dead worker's admission slots come back when its leases expire: within the
    # CLI's 3 x 4 s of --job-timeout, not at the default 15 s (with the 4 jobs in flight
    # all on the doomed worker, it held every slot of the model and the survivor could
    # run none of the retries in time: seen once in a CI run).
    workers_env = {**lmq_env, "LMQ_LEASE_TTL_S": "3"}
    doomed = worker_factory(EMBED, workers_env)
    worker_factory(EMBED, workers_env)
    corpus = make_corpus(tmp_path, long_paragraphs=120)
    out = tmp_path / "c.parquet"
    parts = Path(f"{out}.lmq-state") / "parts"
    run = lmq_popen(*embed_args(corpus, out, "--job-tokens", "100", "--max-in-flight", "4",
                                "--job-timeout", "4"), "--no-progress", env=lmq_env)
    wait_until(lambda: parts.exists() and len(list(parts.glob("*.arrow"))) >= 2, timeout=60,
               message="two part files")
    doomed.kill()
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert "failures: 0 chunks" in stdout
    # No count of retries is asserted: the dead worker's jobs come back either as the CLI's
    # retries (after --job-timeout) or redelivered under the same id by the janitor, and
    # the worker may hold no job at the kill (0 retries seen once in ~10 runs).
    table = rows(out)
    planned = int(stdout.split("chunks: ")[1].split(" ")[0])
    duplicates = int(stdout.split("from an earlier run, ")[1].split(" duplicates")[0])
    assert len(table) == planned - duplicates
    assert len({r["id"] for r in table}) == len(table)
    assert all(len(r["vector"]) == 768 for r in table)  # type: ignore[arg-type]


def test_failed_jobs_are_retried_then_listed_and_resume_finishes_them(
        embed_worker, lmq_env, simulator, tmp_path):  # type: ignore[no-untyped-def]
    corpus = make_corpus(tmp_path, long_paragraphs=20)
    out = tmp_path / "c.parquet"
    # one chunk per job: a job of several that fails is split (the next tests), not retried
    args = embed_args(corpus, out, "--max-in-flight", "1", "--job-tokens", "1")

    simulator.admin.fail_nth("embedString", 3)
    retried = lmq(*args, "--no-progress", "--retries", "1", env=lmq_env)
    assert "failures: 0 chunks, 1 job retries" in retried.stdout
    expected = rows(out)

    simulator.admin.fail_nth("embedString", 3)
    failed = lmq(*args, "--no-progress", "--retries", "0", "--restart", env=lmq_env,
                 check=False)
    assert failed.returncode == 1 and "rerun with --resume" in failed.stderr
    reasons = [line for line in failed.stderr.splitlines() if line.startswith("failed: ")]
    assert reasons and " #" in reasons[0] and "FAILURE" in reasons[0]  # which chunks, why
    listed = [json.loads(line) for line in Path(f"{out}.failed.jsonl").read_text().splitlines()]
    assert listed and all("error" in row and row["id"] for row in listed)
    assert len(rows(out)) == len(expected) - len(listed)  # what succeeded is written
    assert Path(f"{out}.lmq-state").exists()

    resumed = lmq(*args, "--no-progress", "--retries", "0", "--resume", env=lmq_env)
    assert f"{len(listed)} embedded now" in resumed.stdout
    assert rows(out) == expected and not Path(f"{out}.failed.jsonl").exists()


def test_no_worker_for_the_model_fails_fast_and_leaves_no_job_queued(
        lmq_env, redis_url, tmp_path):  # type: ignore[no-untyped-def]
    import redis

    from workers.contract import queue_name

    corpus = make_corpus(tmp_path)
    out = tmp_path / "c.parquet"
    refused = lmq(*embed_args(corpus, out), "--no-progress", env=lmq_env, check=False)
    assert refused.returncode != 0 and "no live worker serves model" in refused.stderr
    assert "--enqueue-anyway" in refused.stderr
    assert redis.Redis.from_url(redis_url).llen(queue_name(EMBED)) == 0  # taken back


def test_workers_use_the_token_counts_a_job_carries_and_pack_vectors(
        embed_worker, lmq_env, simulator):  # type: ignore[no-untyped-def]
    from producers.job_queue import JobQueue
    from workers.contract import EmbeddingJob
    from workers.error import ContextOverflowError
    from workers.settings import Settings

    settings = Settings(broker_url=lmq_env["LMQ_BROKER_URL"],
                        result_backend=lmq_env["LMQ_RESULT_BACKEND"],
                        lmstudio_host=lmq_env["LMQ_LMSTUDIO_HOST"])
    texts = ["a short text", "another short one"]
    with JobQueue(settings) as queue:
        packed = queue.submit(EmbeddingJob(model=EMBED, texts=texts, token_counts=[3, None],
                                           exact_token_counts=False, encoding_format="base64"))
        result = packed.result(timeout=30)
        plain = queue.embed(EMBED, texts).result(timeout=30)
        claimed = queue.submit(EmbeddingJob(model=EMBED, texts=["tiny"],
                                            token_counts=[10**6]))
        with pytest.raises(ContextOverflowError, match="1000000 tokens, over the context"):
            claimed.result(timeout=30)
    assert result.vectors == [] and result.token_counts[0] == 3  # type: ignore[attr-defined]
    vectors = [np.frombuffer(base64.b64decode(v), "<f4")
               for v in result.vectors_base64]  # type: ignore[attr-defined]
    assert np.allclose(vectors, plain.vectors, atol=1e-6)  # type: ignore[attr-defined]


def test_every_failure_of_embed_corpus_and_search_is_one_line(
        embed_worker, lmq_env, tmp_path):  # type: ignore[no-untyped-def]
    """Issue 23: no traceback reaches a user, whatever fails; one line says what to do."""
    from producers.redis_server import free_port

    corpus = make_corpus(tmp_path, long_paragraphs=5)
    out = tmp_path / "c.parquet"
    not_a_corpus = tmp_path / "notes.parquet"
    not_a_corpus.write_text("just text\n")
    cases = {
        "LM Studio at": ["--lmstudio-host", f"127.0.0.1:{free_port()}",
                         *embed_args(corpus, out), "--no-progress"],
        "has no such model": embed_args(corpus, out, "--no-progress", "--model",
                                        "no-such-model", "--enqueue-anyway", "--restart"),
        "--overlap": embed_args(corpus, out, "--overlap", "48"),
        "is not a corpus written by `lmq embed-corpus`": [
            "search", str(not_a_corpus), "anything", "--model", EMBED],
        "cannot reach Redis": ["batch", "status", "some-batch"],
    }
    dead = f"redis://127.0.0.1:{free_port()}/0"
    redis_down = {"LMQ_BROKER_URL": dead, "LMQ_RESULT_BACKEND": dead, "LMQ_REDIS_URL": dead}
    for expected, args in cases.items():
        env = {**lmq_env, **(redis_down if expected == "cannot reach Redis" else {})}
        done = lmq(*args, env=env, check=False)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode != 0 and "Traceback" not in done.stderr, (args, done.stderr)
        assert expected in lines[-1] and len(lines) <= 3, (expected, done.stderr)


# Failure per chunk (issue 23): the workers' LM Studio loaded the model with a 128-token
# context, the producer counts on its own LM Studio (LMQ_LMSTUDIO_HOST, 4096 tokens) - two
# hosts, each with its own load settings. A record of ~150 tokens is one chunk there; a
# worker counts it on its host and refuses it (ContextOverflowError), failing its job of 41.
WORKER_CONTEXT = 128
BAD_RECORD = 18  # records.jsonl#L18


def _records_corpus(root: Path) -> Path:
    records = [{"text": f"Record {i} is about topic {i % 5}: a short sentence."}
               for i in range(1, 42)]
    records[BAD_RECORD - 1] = {"text": " ".join(f"word{i}" for i in range(150)) + "."}
    root.mkdir()
    (root / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return root


@pytest.fixture()
def small_context_worker(worker_factory, lmq_env, simulator):  # type: ignore[no-untyped-def]
    import lmstudio as lms

    with lms.Client(simulator.host) as client:
        client.embedding.unload(EMBED)
        client.embedding.load_new_instance(EMBED, config={"contextLength": WORKER_CONTEXT})
    return worker_factory(EMBED, lmq_env)


@pytest.fixture()
def producer_host() -> Iterator[str]:
    from simulator.testing import running_simulator

    with running_simulator() as other:
        yield str(other.host)


def _split_args(corpus: Path, out: Path, host: str) -> list[str]:
    return ["--lmstudio-host", host, "embed-corpus", str(corpus), "--model", EMBED,
            "--out", str(out), "--chunk-tokens", "200", "--no-progress"]


def _failed_rows(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in Path(f"{out}.failed.jsonl").read_text().splitlines()]


def test_a_chunk_the_model_cannot_take_fails_alone_and_the_rest_is_embedded(
        small_context_worker, lmq_env, producer_host, tmp_path):  # type: ignore[no-untyped-def]
    out = tmp_path / "c.parquet"
    done = lmq(*_split_args(_records_corpus(tmp_path / "corpus"), out, producer_host),
               env=lmq_env, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "failures: 1 chunks" in done.stdout and "jobs split" in done.stdout, done.stdout
    (failed,) = _failed_rows(out)
    assert failed["source"].endswith(f"records.jsonl#L{BAD_RECORD}")  # type: ignore[union-attr]
    assert f"over the context length {WORKER_CONTEXT}" in str(failed["error"])
    reason = [line for line in done.stderr.splitlines() if line.startswith("failed: 1 chunks")]
    assert reason and f"#L{BAD_RECORD}" in reason[0]
    table = rows(out)
    assert [str(r["source"]).rsplit("#L", 1)[1] for r in table] == [
        str(n) for n in range(1, 42) if n != BAD_RECORD]  # every other chunk, in order
    assert all(len(r["vector"]) == 768 for r in table)  # type: ignore[arg-type]


def test_resume_after_an_interruption_in_the_middle_of_a_split_gives_the_same_rows(
        small_context_worker, lmq_env, producer_host, simulator, tmp_path
        ):  # type: ignore[no-untyped-def]
    corpus = _records_corpus(tmp_path / "corpus")
    whole = tmp_path / "whole.parquet"
    first = lmq(*_split_args(corpus, whole, producer_host), env=lmq_env, check=False)
    assert first.returncode == 1, first.stderr

    simulator.admin.set_timing(embedding_latency_s=0.15)  # the split takes a few seconds
    out = tmp_path / "resumed.parquet"
    parts = Path(f"{out}.lmq-state") / "parts"
    run = lmq_popen(*_split_args(corpus, out, producer_host), env=lmq_env)
    wait_until(lambda: parts.exists() and any(parts.glob("part-*-r*.arrow")), timeout=60,
               message="a piece of the split job written")
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=30)
    pieces = sorted(p.name for p in parts.glob("*.arrow"))
    assert pieces and all("-r" in name for name in pieces)  # killed in the middle of the split

    resumed = lmq(*_split_args(corpus, out, producer_host), "--resume", env=lmq_env,
                  check=False)
    assert resumed.returncode == 1 and "failures: 1 chunks" in resumed.stdout, resumed.stderr
    reused = int(resumed.stdout.split("embedded now, ")[1].split(" from")[0])
    assert reused > 0  # the pieces written before the kill
    assert rows(out) == rows(whole)  # row by row, vectors included
    assert [r["id"] for r in _failed_rows(out)] == [r["id"] for r in _failed_rows(whole)]


def test_jobs_no_worker_starts_in_time_become_failed_chunks_and_never_run(
        worker_factory, lmq_env, redis_url, simulator, tmp_path):  # type: ignore[no-untyped-def]
    """--expires with no worker alive: each job ends expired about a second after it was
    sent (not at --job-timeout), is not resent, and its chunks are listed with the reason;
    a worker started afterwards embeds none of them, and --resume then embeds them all."""
    import time

    import redis

    from tests.integration.test_worker_support import rpc_calls, unacked
    from workers.contract import queue_name

    corpus = make_corpus(tmp_path, long_paragraphs=6)
    out = tmp_path / "c.parquet"
    args = embed_args(corpus, out, "--no-progress", "--enqueue-anyway", "--retries", "2")
    started = time.monotonic()
    expired = lmq(*args, "--expires-s", "1", "--time-limit-s", "60", env=lmq_env, check=False)
    assert expired.returncode == 1, expired.stderr
    assert time.monotonic() - started < 60  # the default --job-timeout is 300 s
    assert "0 job retries" in expired.stdout  # an expired job is not resent
    assert "expires_s" in expired.stderr and "rerun with --resume" in expired.stderr
    listed = [json.loads(line) for line in Path(f"{out}.failed.jsonl").read_text().splitlines()]
    assert listed and all("JobExpiredError" in row["error"] or "expires_s" in row["error"]
                          for row in listed)

    worker_factory(EMBED, lmq_env)
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: client.llen(queue_name(EMBED)) == 0 and unacked(redis_url) == 0,
               timeout=60, message="the expired jobs' messages taken and acknowledged")
    assert rpc_calls(simulator, "embedString") == []  # none of them ran
    resumed = lmq(*args, "--resume", env=lmq_env)
    assert f"{len(listed)} embedded now" in resumed.stdout
    assert not Path(f"{out}.failed.jsonl").exists()
    assert rpc_calls(simulator, "embedString")  # what "none of them ran" counted
