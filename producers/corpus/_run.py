"""`embed_corpus`: plan in a background thread, dispatch, merge, summarise."""

from __future__ import annotations

import json
import os
import queue as queue_mod
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producers.corpus._chunk import Chunker, ChunkSpec, TokenCounter
from producers.corpus._discover import SourceFile, discover
from producers.corpus._dispatch import Dispatcher, DispatchOptions, DispatchResult
from producers.corpus._plan import JobPlan, Planner
from producers.corpus._progress import Progress
from producers.corpus._state import RunState, state_dir_for
from producers.corpus._writer import FORMATS, OrderedOutput


@dataclass
class CorpusOptions:
    model: str
    out: Path
    fmt: str = "parquet"
    text_field: str = "text"
    chunk_tokens: int = 512
    overlap_tokens: int = 64
    exact_chunks: bool = False
    job_tokens: int = 32768
    job_max_texts: int = 256
    max_in_flight: int = 8
    retries: int = 2
    job_timeout_s: float = 300.0
    resume: bool = False
    restart: bool = False
    enqueue_anyway: bool = False
    priority: str = "low"  # bulk work: interactive jobs go first
    expires_s: float | None = None  # per job: not started in time -> its chunks fail
    time_limit_s: float | None = None  # per job: cancelled this long after it started
    progress: bool = True

    def params(self, paths: Sequence[str]) -> dict[str, Any]:
        """What must match between an interrupted run and its resume."""
        return {"paths": [str(Path(p).resolve()) for p in paths], "model": self.model,
                "format": self.fmt, "text_field": self.text_field,
                "chunk_tokens": self.chunk_tokens, "overlap_tokens": self.overlap_tokens,
                "exact_chunks": self.exact_chunks,
                "job_tokens": self.job_tokens, "job_max_texts": self.job_max_texts}


@dataclass
class CorpusSummary:
    out: str
    files: int
    documents: int
    skipped: list[dict[str, str]]
    chunks: int
    embedded_chunks: int
    resumed_chunks: int
    duplicates: int
    tokens: int
    elapsed_s: float
    tokens_per_s: float
    retried_jobs: int
    failed_chunks: int
    split_jobs: int = 0  # jobs split because one of their chunks could not be embedded
    duplicates_file: str | None = None
    failed_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tokens_estimated: bool = False  # the chunker's calibrated estimates (no --exact-chunks)
    # one entry per reason: {"reason", "chunks", "examples": ["<source> #<chunk index>"]}
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed_chunks == 0

    def lines(self) -> list[str]:
        return [
            f"documents: {self.documents} in {self.files} files"
            + (f" ({len(self.skipped)} skipped)" if self.skipped else ""),
            f"chunks: {self.chunks} ({self.embedded_chunks} embedded now, "
            f"{self.resumed_chunks} from an earlier run, {self.duplicates} duplicates skipped)",
            f"tokens{' (estimated)' if self.tokens_estimated else ''}: {self.tokens:,} in "
            f"{self.elapsed_s:.1f}s ({self.tokens_per_s:,.0f} tok/s)",
            f"failures: {self.failed_chunks} chunks, {self.retried_jobs} job retries"
            + (f", {self.split_jobs} jobs split to find them" if self.split_jobs else ""),
            f"output: {self.out}" + (f"; duplicates: {self.duplicates_file}"
                                     if self.duplicates_file else ""),
        ]


    def failure_lines(self) -> list[str]:
        """Why chunks failed: one line per reason, with the first chunks it hit."""
        return [f"failed: {f['chunks']} chunks ({', '.join(f['examples'])}"
                f"{', ...' if f['chunks'] > len(f['examples']) else ''}): {f['reason']}"
                for f in self.failures]


def _failures(failed: list[tuple[JobPlan, str]], examples: int = 3) -> list[dict[str, Any]]:
    by_reason: dict[str, dict[str, Any]] = {}
    for plan, error in failed:
        reason = " ".join(str(error).split())[:300]  # one line, whatever the worker said
        entry = by_reason.setdefault(reason, {"reason": reason, "chunks": 0, "examples": []})
        entry["chunks"] += len(plan.items)
        room = examples - len(entry["examples"])
        entry["examples"] += [f"{c.source} #{c.index}" for _, _, c in plan.items[:max(room, 0)]]
    return list(by_reason.values())


class _Feed:
    """Runs the planner in a thread; a bounded queue gives backpressure."""

    _END = object()

    def __init__(self, plans: Iterator[JobPlan], depth: int) -> None:
        self._queue: queue_mod.Queue[Any] = queue_mod.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(plans,), daemon=True,
                                        name="lmq-corpus-plan")
        self._thread.start()

    def _run(self, plans: Iterator[JobPlan]) -> None:
        try:
            for plan in plans:
                while not self._stop.is_set():
                    try:
                        self._queue.put(plan, timeout=0.2)
                        break
                    except queue_mod.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the dispatching thread
            self._error = exc
        self._queue.put(self._END)

    def next(self, wait_s: float) -> JobPlan | None:
        if self._done:
            return None
        try:
            item = self._queue.get(timeout=wait_s) if wait_s else self._queue.get_nowait()
        except queue_mod.Empty:
            return None
        if item is self._END:
            self._done = True
            if self._error is not None:
                raise self._error
            return None
        return item  # type: ignore[no-any-return]

    def exhausted(self) -> bool:
        return self._done

    def stop(self) -> None:
        self._stop.set()


def run_corpus(paths: Sequence[str], options: CorpusOptions, queue: Any,
               counter: TokenCounter, context_tokens: int | None) -> CorpusSummary:
    if options.fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    sources = list(discover(paths))
    state = RunState(state_dir_for(options.out))
    state.open(options.params(paths), resume=options.resume, restart=options.restart)
    progress = Progress(sum(s.size_bytes for s in sources), enabled=options.progress)
    chunker = Chunker(counter, ChunkSpec(options.chunk_tokens, options.overlap_tokens),
                      context_tokens, exact=options.exact_chunks)
    output = OrderedOutput(options.out, options.fmt)
    try:
        with state.duplicates.open("w", encoding="utf-8") as dup_file:
            planner = Planner(chunker, job_tokens=options.job_tokens,
                              job_max_texts=options.job_max_texts,
                              text_field=options.text_field, duplicates=dup_file)
            result = _dispatch(planner, sources, options, queue, state, progress, output)
    except BaseException:
        output.abort()
        raise
    progress.close()
    return _finish(options, state, planner, result, progress, output)


def _dispatch(planner: Planner, sources: list[SourceFile], options: CorpusOptions,
              queue: Any, state: RunState, progress: Progress,
              output: OrderedOutput) -> DispatchResult:
    feed = _Feed(planner.jobs(sources), depth=max(2, options.max_in_flight * 2))
    dispatch_options = DispatchOptions(
        model=options.model, max_in_flight=options.max_in_flight, retries=options.retries,
        job_timeout_s=options.job_timeout_s, enqueue_anyway=options.enqueue_anyway,
        exact_token_counts=options.exact_chunks, priority=options.priority,
        expires_s=options.expires_s, time_limit_s=options.time_limit_s)
    dispatcher = Dispatcher(queue, state, dispatch_options, progress, output)

    def next_plan(wait_s: float) -> JobPlan | None:
        plan = feed.next(wait_s)
        stats = planner.stats
        progress.estimate(stats.chunks - stats.duplicates, stats.bytes_read, feed.exhausted())
        return plan

    try:
        return dispatcher.run(next_plan, feed.exhausted)
    finally:
        feed.stop()


def _finish(options: CorpusOptions, state: RunState, planner: Planner, result: DispatchResult,
            progress: Progress, output: OrderedOutput) -> CorpusSummary:
    stats = planner.stats
    rows = output.close()
    dup_path = _sidecar(options.out, "duplicates.jsonl")
    shutil.copyfile(state.duplicates, dup_path)
    failed_path = _write_failed(options.out, result)
    if not result.failed:
        state.remove()
    failed_chunks = sum(len(plan.items) for plan, _ in result.failed)
    elapsed = progress.elapsed_s
    return CorpusSummary(
        out=str(options.out), files=stats.files, documents=stats.documents,
        skipped=[{"source": s.source, "reason": s.reason} for s in stats.skipped],
        chunks=stats.chunks, embedded_chunks=result.embedded_chunks,
        resumed_chunks=result.resumed_chunks, duplicates=stats.duplicates,
        tokens=result.embedded_tokens, elapsed_s=elapsed,
        tokens_per_s=result.embedded_tokens / max(elapsed, 1e-9),
        retried_jobs=result.retried_jobs, failed_chunks=failed_chunks,
        split_jobs=result.split_jobs,
        tokens_estimated=result.tokens_estimated, failures=_failures(result.failed),
        duplicates_file=str(dup_path), failed_file=str(failed_path) if failed_path else None,
        extra={"rows": rows, "token_count_calls": getattr(planner.chunker.counter, "calls", None)})


def _sidecar(out: Path, suffix: str) -> Path:
    return out.with_name(f"{out.name}.{suffix}")


def _write_failed(out: Path, result: DispatchResult) -> Path | None:
    path = _sidecar(out, "failed.jsonl")
    if not result.failed:
        if path.exists():
            os.remove(path)
        return None
    with path.open("w", encoding="utf-8") as handle:
        for plan, error in result.failed:
            for cid, sha, chunk in plan.items:
                row = {"id": cid, "source": chunk.source, "chunk_index": chunk.index,
                       "sha256": sha, "error": error}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


