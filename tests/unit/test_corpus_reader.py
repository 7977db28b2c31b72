"""Discovery and the streaming readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.corpus._discover import discover
from producers.corpus._reader import MAX_BLOCK_CHARS, Document, Skipped, read_documents


def docs(path: Path, field: str = "text") -> list[Document | Skipped]:
    (source,) = list(discover([path]))
    return list(read_documents(source, field))


def text_of(doc: Document | Skipped) -> str:
    assert isinstance(doc, Document)
    return "".join(doc.blocks)


def test_discovery_is_sorted_skips_hidden_and_unknown(tmp_path: Path) -> None:
    for name in ["b.md", "a.txt", ".hidden.txt", "c.bin", "sub/d.html", "sub/e.jsonl"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    found = [(s.path.relative_to(tmp_path).as_posix(), s.kind) for s in discover([tmp_path])]
    assert found == [("a.txt", "text"), ("b.md", "text"), ("sub/d.html", "html"),
                     ("sub/e.jsonl", "jsonl")]
    with pytest.raises(FileNotFoundError):
        list(discover([tmp_path / "missing"]))


def test_text_blocks_rejoin_exactly(tmp_path: Path) -> None:
    body = "Ünïcode title\n\npara one\nline two\n\n\n" + "x" * (MAX_BLOCK_CHARS * 2 + 5) + "\nend"
    (tmp_path / "a.txt").write_text(body, encoding="utf-8")
    (doc,) = docs(tmp_path / "a.txt")
    assert isinstance(doc, Document)
    blocks = list(doc.blocks)
    assert "".join(blocks) == body
    assert blocks[0] == "Ünïcode title\n\n"
    assert max(len(b) for b in blocks) <= MAX_BLOCK_CHARS + 8192


def test_html_drops_scripts_and_styles(tmp_path: Path) -> None:
    html = ("<html><head><style>p{}</style><title>T</title></head><body>"
            "<script>var x = 1;</script><p>Hello &amp; welcome</p><div>Second  block</div>"
            "</body></html>")
    (tmp_path / "a.html").write_text(html)
    text = text_of(docs(tmp_path / "a.html")[0])
    assert "var x" not in text and "p{}" not in text
    assert text.strip() == "Hello & welcome\n\nSecond block"


def test_jsonl_records_and_bad_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"body": "first"}), "not json", json.dumps({"other": 1}), "",
             json.dumps({"body": "second"})]
    (tmp_path / "a.jsonl").write_text("\n".join(lines))
    found = docs(tmp_path / "a.jsonl", "body")
    assert [d.source.rsplit("#", 1)[1] for d in found] == ["L1", "L2", "L3", "L5"]
    assert [type(d).__name__ for d in found] == ["Document", "Skipped", "Skipped", "Document"]
    assert "--text-field" in found[2].reason  # type: ignore[union-attr]


def test_pdf_without_the_extra_is_skipped_with_a_hint(tmp_path: Path) -> None:
    try:
        import pypdf  # noqa: F401
    except ImportError:
        (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4")
        (skipped,) = docs(tmp_path / "a.pdf")
        assert isinstance(skipped, Skipped)
        assert "lmstudio-queue[pdf]" in skipped.reason
    else:
        pytest.skip("pypdf is installed")
