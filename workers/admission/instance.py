"""Admission's first layer: one loaded LM Studio instance's KV cells and parallel slots.

LM Studio 0.4 runs P predictions at once per loaded instance (Max Concurrent Predictions,
`numParallelSessions`, default 4). Its llama.cpp engine allocates the KV cache for n_ctx
cells when the model loads: with a unified cache the P sequences share the n_ctx cells
(each up to n_ctx); without, each has n_ctx / P of its own (llama.cpp's n_ctx_seq). A
prediction that finds no free cell fails, however much GPU memory is free. So a job
reserves prompt + max output tokens of the instance's cells and one of its P slots, in a
weighted semaphore (`semaphore`, in cells instead of bytes) that every worker of that
instance shares through Redis; one that can never fit (more than a sequence holds) fails
at once with the numbers.

The shape comes from LM Studio after loading (context length, parallel, unified); where
it does not say, P is LMQ_SLOTS and the cache is taken as per-sequence (llama.cpp's own
default, and the stricter limit).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from workers import keys
from workers.admission.seam import ModelFacts
from workers.error import DoesNotFitError

# An instance's semaphore lives next to its host group's: "<group>#instance:<identifier>".
INSTANCE_MARK = "#instance:"


def instance_group(host_group: str, identifier: str) -> str:
    return f"{host_group}{INSTANCE_MARK}{identifier}"


@dataclass(frozen=True)
class InstanceShape:
    """One loaded instance's KV cells and parallel predictions."""

    model_key: str
    identifier: str
    cells: int  # n_ctx: the KV cache's cells
    parallel: int  # P
    unified: bool
    source: str  # "LM Studio" or what was assumed

    @property
    def seq_cells(self) -> int:
        """Cells one sequence may use: n_ctx unified, else n_ctx_seq = n_ctx / P."""
        return self.cells if self.unified else max(1, self.cells // self.parallel)

    @classmethod
    def of(cls, facts: ModelFacts, slots: int) -> InstanceShape:
        parallel = facts.parallel or slots
        if facts.grows_kv_per_token:
            # MLX allocates no cells: each sequence may grow to n_ctx out of memory (the host
            # layer's bytes). Shown as P per-sequence caches of n_ctx, so that here only the
            # slots and the per-sequence limit bind; one n_ctx shared by all (as when MLX
            # reports a unified cache) ran a job without max_tokens alone.
            return cls(facts.model_key, facts.identifier or facts.model_key,
                       int(facts.context_length or 0) * parallel, parallel, False,
                       "MLX: KV grows per token; memory is the host layer's")
        said = facts.parallel is not None and facts.unified_kv is not None
        return cls(facts.model_key, facts.identifier or facts.model_key,
                   int(facts.context_length or 0), parallel,
                   bool(facts.unified_kv), "LM Studio" if said else
                   f"assumed: LM Studio did not say ({facts.parallel or f'LMQ_SLOTS={slots}'} "
                   f"parallel, {'unified' if facts.unified_kv else 'per-sequence'} KV)")

    def describe(self) -> str:
        kind = "unified" if self.unified else f"per-sequence, {self.seq_cells:,} each"
        return (f"instance {self.identifier!r}: {self.cells:,} KV cells ({kind}), "
                f"{self.parallel} parallel ({self.source})")

    def check_fits(self, label: str, tokens: int) -> None:
        """DoesNotFitError when a job needs more cells than one sequence may hold."""
        if tokens > self.seq_cells:
            how = ("the whole unified KV cache" if self.unified else
                   f"{self.cells:,} cells / {self.parallel} parallel")
            raise DoesNotFitError(
                f"{label} needs {tokens:,} tokens of KV cache (prompt + max output), but a "
                f"prediction of {self.model_key!r} holds at most {self.seq_cells:,} ({how}); "
                "shorten the prompt or max_tokens, or load the model with a larger context "
                "length or fewer parallel predictions")

    def publish(self, client: redis.Redis, host_group: str, ttl_s: float) -> None:
        """Write the shape next to the instance's semaphore, for `lmq gpu` and metrics,
        for `ttl_s`: its workers renew it with their heartbeat, so an instance whose
        workers are all gone drops out of the status."""
        key = f"{keys.admission(instance_group(host_group, self.identifier))}:shape"
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"model": self.model_key, "cells": self.cells,
                                    "parallel": self.parallel, "unified": int(self.unified),
                                    "seq_cells": self.seq_cells, "source": self.source})
            pipe.pexpire(key, max(1, int(ttl_s * 1000)))
            pipe.execute()
