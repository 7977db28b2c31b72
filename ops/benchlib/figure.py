"""A benchmark figure (pool vs its peer, same run) and the Markdown / JSON report.

A figure with no peer to measure (the simulator's own rate, slot utilisation) sets
`peer_is_goal`: its `peer` is then the goal's number, and its ratio is to the goal.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class SectionSkippedError(RuntimeError):
    """A section cannot run on this machine (e.g. an optional extra is missing); the report
    records the reason and `ops/bench` does not count it as a failure."""


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
    peer_is_goal: bool = False
    # Set when pool and peer ran in alternating rounds: the median of the rounds' ratios
    # (steadier on a shared machine than the ratio of the medians shown as pool and peer).
    paired_ratio: float | None = None

    @property
    def ratio(self) -> float:
        if self.paired_ratio is not None:
            return self.paired_ratio
        return self.pool / self.peer if self.peer else float("nan")

    def as_row(self) -> str:
        better = "higher" if self.higher_is_better else "lower"
        peer = "no peer, goal" if self.peer_is_goal else self.peer_name
        return (f"| {self.section} | {self.name} | {_num(self.pool)} {self.unit} | "
                f"{peer}: {_num(self.peer)} {self.unit} | {_ratio(self.ratio)} "
                f"({better} is better) | {self.goal} |")


def _ratio(value: float) -> str:
    if 0 < value < 0.01:  # e.g. a 0.2 ms read next to a 10 s one: 0.00x would hide it
        return f"{value:.2g}x (1/{1 / value:,.0f})"
    return f"{value:.2f}x"


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
             "against the same simulator; a row whose peer reads \"no peer, goal\" has "
             "nothing to compare with, and its ratio is to the goal.", ""]
    if meta.get("replaced"):  # `ops/bench --merge`: some sections come from a later run
        lines += ["Rows of these sections were replaced by a later run: "
                  + "; ".join(meta["replaced"]) + ".", ""]
    lines.append(HEADER)
    lines += [figure.as_row() for figure in figures]
    if meta.get("skipped"):
        lines += ["", "Skipped in this run: " + "; ".join(meta["skipped"])]
    if meta.get("failed"):
        lines += ["", "Failed in this run (not measured): " + "; ".join(meta["failed"])]
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
