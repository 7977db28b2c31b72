"""Where a prediction's KV cache lives, per engine, as LM Studio 0.4 allocates it.

llama.cpp (GGUF): the KV cache for n_ctx cells is allocated when the model loads
(`SimState.load`). A sequence occupies one cell per token of prompt and of output. With a
unified cache all P parallel sequences share the n_ctx cells, each may use up to n_ctx, and
a batch that finds no free cells fails with llama.cpp's "failed to find a memory slot"
however much VRAM is free; without it each sequence has n_ctx / P cells of its own
(llama.cpp's n_ctx_seq), so sequences never take cells from each other and the limit is
the sequence's context. MLX: no cells; the KV cache grows per token out of (unified)
memory, and running out is an out-of-memory error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator import errors
from simulator.gpu import OutOfMemoryError

if TYPE_CHECKING:
    from simulator.catalog import Instance
    from simulator.gpu import Vram


class KvUse:
    """One prediction's share of its instance's KV cache; `release()` gives it back."""

    def __init__(self, inst: Instance, vram: Vram, owner: str) -> None:
        self.inst, self.vram, self.owner = inst, vram, owner
        self.cells = 0

    def take(self, tokens: int) -> None:
        """Room for `tokens` more tokens of this sequence, or the engine's error."""
        inst = self.inst
        if inst.engine == "mlx":
            try:
                self.vram.reserve(self.owner, int(inst.kv_bytes_per_token * tokens))
            except OutOfMemoryError as exc:
                raise errors.kv_cache_oom(exc.needed_bytes, exc.free_bytes) from None
        elif inst.unified_kv:
            if inst.cells_used + tokens > inst.context_length:
                raise errors.no_kv_cells(tokens, inst.context_length - inst.cells_used,
                                         inst.context_length)
            inst.cells_used += tokens
        self.cells += tokens

    def release(self) -> None:
        if self.inst.engine == "mlx":
            self.vram.release(self.owner)
        elif self.inst.unified_kv:
            self.inst.cells_used -= self.cells
        self.cells = 0
