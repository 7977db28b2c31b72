"""Every failure of an `lmq` command is one line (issue 23), a bug included."""

from __future__ import annotations

import tempfile
from pathlib import Path

from producers.cli._failure import failure_line


def test_a_bug_is_one_line_pointing_at_its_traceback() -> None:
    try:
        {}["missing"]  # noqa: B018 - the bug
    except KeyError as exc:
        line = failure_line(exc)
    assert "\n" not in line and line.startswith("unexpected error KeyError: 'missing'")
    report = Path(tempfile.gettempdir()) / "lmq-error.txt"
    assert str(report) in line and "Traceback" in report.read_text()


def test_a_file_error_names_the_file() -> None:
    line = failure_line(PermissionError(13, "Permission denied", "/srv/out.parquet"))
    assert line.startswith("Permission denied: /srv/out.parquet") and "\n" not in line
