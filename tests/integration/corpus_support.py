"""Helpers for the corpus and batch integration tests (no tests here)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

EMBED = "text-embedding-nomic-embed-text-v1.5"
LLM = "llama-3.2-1b-instruct"
ROOT = Path(__file__).resolve().parents[2]
LMQ = [sys.executable, "-c", "from producers.cli import main; main(prog_name='lmq')"]

UNICODE_DOC = ("Ünïcödé tëxt: 日本語の文章です。Это русский текст. Emoji 🚀 rockets fly.\n\n"
               "Second paragraph with ñ and ß and Ελληνικά words.\n")
SHARED = "Shared boilerplate paragraph: this notice appears in several files verbatim."


def make_corpus(root: Path, long_paragraphs: int = 60) -> Path:
    """A corpus with duplicates, a long document, unicode, HTML, JSONL and an empty file."""
    corpus = root / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "empty.txt").write_text("")
    (corpus / "unicode.md").write_text(UNICODE_DOC, encoding="utf-8")
    (corpus / "dup_a.txt").write_text(f"{SHARED}\n")
    (corpus / "dup_b.txt").write_text(f"\n{SHARED}\n\n")  # the same chunk text
    long_text = "\n\n".join(
        f"Paragraph {i} of the long document talks about topic {i % 7}. "
        f"It has a second sentence, number {i}, with more words in it. And a third one."
        for i in range(long_paragraphs))
    (corpus / "sub" / "long.rst").write_text(long_text)
    (corpus / "sub" / "page.html").write_text(
        "<html><head><style>.x{}</style><script>alert(1)</script></head><body>"
        "<h1>Zebra migration</h1><p>Zebras cross the savanna river every year.</p></body></html>")
    records = [{"text": "Quantum lattice cryptography resists attacks."}, {"title": "no text"},
               {"text": SHARED}]
    (corpus / "sub" / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    return corpus


def lmq(*args: str, env: dict[str, str], timeout_s: float = 120.0,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a subprocess."""
    done = subprocess.run([*LMQ, *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout_s)
    if check and done.returncode != 0:
        raise AssertionError(f"lmq {' '.join(args)} exited {done.returncode}\n"
                             f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return done


def lmq_popen(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """The CLI in the background, with Ctrl-C's default meaning (tests send it SIGINT)."""
    return subprocess.Popen([*LMQ, *args], cwd=ROOT,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """SIGINT back to its default in the child before exec. A process inherits an ignored
    SIGINT (a shell ignores it in jobs started with `&`: CI started that way), and Python
    then installs no KeyboardInterrupt handler: the CLI would not see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def rows(path: Path) -> list[dict[str, object]]:
    return pq.read_table(path).to_pylist()


# Celery 5.7.0's docs (234 .rst files), fetched at install time by ops/setup.d/celery-docs.
CELERY_DOCS = Path(sys.prefix) / "lmq-data" / "celery-5.7.0-docs"


def make_hard_corpus(root: Path) -> Path:
    """Real-world text a tokenizer finds dense, for a 512-token embedding model (issue 23):
    an RST list on one long line without a sentence end (the line that stopped a run on
    Celery's docs), a Markdown table, code blocks, a long URL, base64, CJK without spaces."""
    corpus = root / "hard"
    corpus.mkdir()
    refs = "".join(f"- :ref:`get-started-{i}` :class:`celery.app.task.Task{i}` "
                   f"`guide <https://docs.celeryq.dev/en/stable/userguide/p{i}.html>`_ "
                   for i in range(90))
    (corpus / "index.rst").write_text(
        "Getting started\n===============\n\n" f"        {refs}\n\n"
        ".. code-block:: python\n\n"
        + "".join(f"    result_{i} = app.send_task('tasks.add', args=[{i}, {i * 7}])\n"
                  for i in range(120))
        + "\nThe end of the page, in a plain sentence.\n")
    table = "\n".join(f"| `opt_{i}` | {i * 31:>6} | 0x{i * 2654435761 % 2**32:08x} | "
                      f"https://example.com/settings/{i}?q={i * i} |" for i in range(160))
    url = "https://example.com/" + "/".join(f"seg{i}-{i * 7919:x}" for i in range(400))
    blob = base64.b64encode(bytes((i * 37) % 256 for i in range(9000))).decode()
    (corpus / "notes.md").write_text(
        f"# Settings\n\n| name | value | hash | link |\n|---|---|---|---|\n{table}\n\n"
        f"See {url} for the rest.\n\n```\n{blob}\n```\n\nA closing paragraph in English.\n")
    sentence = ("章では分散タスクキューの仕組みを説明し"
                "ワーカーがタスクを受け取り結果を返す流れを示す")
    cjk = "".join(f"第{i}{sentence}" for i in range(60))
    (corpus / "cjk.txt").write_text(f"{cjk}\n\n中文段落没有空格也没有标点符号" * 3 + "\n",
                                    encoding="utf-8")
    return corpus
