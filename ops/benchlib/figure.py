"""A benchmark figure (pool vs its peer, same run) and the Markdown / JSON report."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    section: str
    name: str
    unit: str
    pool: float
    peer: float
    peer_name: str
    higher_is_better: bool = True
    goal: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.pool / self.peer if self.peer else float("nan")

    def as_row(self) -> str:
        better = "higher" if self.higher_is_better else "lower"
        return (f"| {self.section} | {self.name} | {_num(self.pool)} {self.unit} | "
                f"{self.peer_name}: {_num(self.peer)} {self.unit} | {self.ratio:.2f}x "
                f"({better} is better) | {self.goal} |")


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


HEADER = ("| section | figure | pool | peer (same run) | pool / peer | goal |\n"
          "| --- | --- | --- | --- | --- | --- |")


def markdown(figures: list[Figure], meta: dict[str, Any]) -> str:
    lines = [f"# lmstudio-queue benchmark report ({meta['mode']})", "",
             f"Run {meta['started']} on {meta['machine']}, {meta['elapsed_s']:.0f} s, "
             f"command `{meta['command']}`. Every peer was measured in the same run, "
             "against the same simulator.", "", HEADER]
    lines += [figure.as_row() for figure in figures]
    if meta.get("skipped"):
        lines += ["", "Not measured in this run: " + "; ".join(meta["skipped"])]
    return "\n".join(lines) + "\n"


def machine() -> str:
    import os

    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, " \
           f"Python {platform.python_version()}"


def write(out_dir: Path, figures: list[Figure], meta: dict[str, Any]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "bench-report.md", out_dir / "bench-report.json"
    md.write_text(markdown(figures, meta))
    rows = [{**asdict(f), "ratio": f.ratio} for f in figures]
    js.write_text(json.dumps({"meta": meta, "figures": rows}, indent=2) + "\n")
    return md, js


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
