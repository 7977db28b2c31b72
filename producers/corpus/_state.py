"""The sidecar state directory that makes a run resumable.

    <out>.lmq-state/
        manifest.json          the run's parameters; a resume must match them
        parts/part-<k>-<sig>.arrow   the rows of embedding job k, written atomically
        parts/part-<k>-r<lo>-<hi>-<sig>.arrow  items lo..hi of job k, when it was split
                                     (`_pieces`: a job that failed for one of its chunks)
        duplicates.jsonl       rebuilt by every run (planning is deterministic)

Job k's signature hashes its chunk ids and texts, so a part is reused only for exactly the
chunks it holds. Parts are merged in job order at the end: an interrupted and resumed run
writes the same output as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_VERSION = 1


class StateMismatchError(ValueError):
    """--resume with parameters other than the interrupted run's."""


class StateExistsError(FileExistsError):
    """A previous run's state exists and neither --resume nor --restart was given."""


def state_dir_for(out: Path) -> Path:
    return out.with_name(out.name + ".lmq-state")


def signature(items: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for chunk_id, sha in items:
        digest.update(f"{chunk_id}:{sha};".encode())
    return digest.hexdigest()[:16]


@dataclass
class RunState:
    root: Path
    # names of the part files on disk when first asked: an interrupted run's, which are the
    # only ones a plan about to be sent can have (a stat and a glob per plan were 7% of
    # the dispatching thread's samples)
    _earlier: frozenset[str] | None = field(default=None, init=False, repr=False)

    @property
    def parts(self) -> Path:
        return self.root / "parts"

    @property
    def duplicates(self) -> Path:
        return self.root / "duplicates.jsonl"

    def part(self, job_index: int, sig: str) -> Path:
        return self.parts / f"part-{job_index:08d}-{sig}.arrow"

    def piece(self, job_index: int, lo: int, hi: int, sig: str) -> Path:
        return self.parts / f"part-{job_index:08d}-r{lo:03d}-{hi:03d}-{sig}.arrow"

    def written_before(self, part: Path) -> bool:
        """Did an earlier (interrupted) run write this part file?"""
        return part.name in self._earlier_parts()

    def pieces(self, job_index: int) -> list[tuple[int, int, Path]]:
        """(lo, hi, path) of the pieces of job `job_index` an earlier run wrote, by lo
        then hi."""
        prefix = f"part-{job_index:08d}-r"
        found = []
        for name in self._earlier_parts():
            if name.startswith(prefix) and name.endswith(".arrow"):
                lo, hi = name[len(prefix):].split("-")[:2]
                if lo.isdigit() and hi.isdigit():
                    found.append((int(lo), int(hi), self.parts / name))
        return sorted(found)

    def _earlier_parts(self) -> frozenset[str]:
        if self._earlier is None:
            self._earlier = frozenset(os.listdir(self.parts) if self.parts.is_dir() else ())
        return self._earlier

    def open(self, params: dict[str, Any], *, resume: bool, restart: bool) -> bool:
        """Prepare the directory; True when resuming an earlier run."""
        manifest = self.root / "manifest.json"
        if self.root.exists() and restart:
            shutil.rmtree(self.root)
        if manifest.exists():
            if not resume:
                raise StateExistsError(
                    f"an unfinished run left {self.root}: pass --resume to continue it or "
                    "--restart to discard it")
            old = json.loads(manifest.read_text())
            if old.get("params") != params:
                raise StateMismatchError(_mismatch(old.get("params", {}), params))
            return True
        self.parts.mkdir(parents=True, exist_ok=True)
        body = {"version": MANIFEST_VERSION, "params": params}
        manifest.write_text(json.dumps(body, indent=2, sort_keys=True))
        return False

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _mismatch(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
    return f"--resume needs the same parameters as the interrupted run ({details}); " \
           "use --restart to start over"
