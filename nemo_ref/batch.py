"""The per-call metadata of one forward: where each token sits, which cache rows it uses, what it sees.

mistral-inference's ``CacheInputMetadata`` idea. :meth:`Batch.build` checks a call's arguments and
turns them into one :class:`Batch` (positions, rows, the number of keys to read, the mask, RoPE
cos/sin, the query scale) that every layer reads; nothing is recomputed per layer. Whatever needs a
host value is decided here, from the caller's host-side integers, so no layer ever reads a tensor
back (a device-to-host sync blocks the CPU's run-ahead and CUDA-graph capture).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .config import ModelArgs
from .kv_cache import KVCache
from .rope import RopeTables, llama4_q_scale


@dataclass
class Batch:
    """Where the tokens of one forward call sit: built once per call, handed to every layer."""

    start: torch.Tensor  # [B] int64, position of tokens[:, 0] in each row
    pos: torch.Tensor  # [B, T] int64, absolute position of every token
    rows: torch.Tensor  # [B] int64, the cache row of each batch row
    row_run: slice | None  # the rows are cache rows r0..r0+B-1 in order: read the cache as a view
    kv_len: int  # keys 0..kv_len-1 exist for some row (longest row's end); host-side
    same_start: int | None  # the position every row starts at, when the host knows it is one
    cached: bool  # a KV cache is read and extended
    window: int | None = None  # sliding window: keys p - window < j <= p
    mask: torch.Tensor | None = None  # [B, 1, n_rep * T, kv_len] for the torch paths; None: no mask
    cos: torch.Tensor | None = None  # [B, T, head_dim / 2] RoPE at each token's position: [B, T, 64]
    sin: torch.Tensor | None = None  # [B, T, 64]
    q_scale: torch.Tensor | None = None  # [B, T] llama4 query scaling; None without it (Nemo)

    @classmethod
    def build(
        cls,
        tokens: torch.Tensor,
        start_pos: int | Sequence[int] | torch.Tensor,
        rows: Sequence[int] | torch.Tensor | None,
        cache: KVCache | None,
        args: ModelArgs,
        rope: RopeTables,
        masked: bool,
    ) -> Batch:
        """The metadata of ``model(tokens, start_pos, rows=rows, cache=cache)``, its arguments checked.

        ``masked``: build the boolean mask the torch attention paths take (the Triton kernels mask
        by position themselves). A tensor ``start_pos`` or ``rows`` is read back here, once.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, seq], got shape {tuple(tokens.shape)}")
        B, T = tokens.shape
        starts = _host_ints(start_pos, B, "start_pos")
        row_list = list(range(B)) if rows is None else _host_ints(rows, None, "rows")
        if len(row_list) != B:
            raise ValueError(f"rows must name {B} cache rows, got {len(row_list)}")
        end = max(starts) + T
        limit = cache.max_len if cache is not None else args.max_positions
        if min(starts) < 0:
            raise ValueError(f"positions must lie in [0, {limit}); this call starts at {min(starts)}")
        if end > limit:
            raise ValueError(f"positions must lie in [0, {limit}); this call reaches {end}")
        if cache is not None and (min(row_list) < 0 or max(row_list) >= cache.max_batch):
            raise ValueError(f"the KV cache has rows 0..{cache.max_batch - 1}; this call uses {row_list}")
        device = tokens.device
        start = torch.tensor(starts, dtype=torch.long, device=device)
        r0 = row_list[0]
        batch = cls(
            start=start,
            pos=start[:, None] + torch.arange(T, device=device),
            rows=torch.tensor(row_list, dtype=torch.long, device=device),
            row_run=slice(r0, r0 + B) if row_list == list(range(r0, r0 + B)) else None,
            kv_len=end,
            same_start=starts[0] if len(set(starts)) == 1 else None,
            cached=cache is not None,
            window=args.sliding_window,
        )
        # The rope table spans the context in use: the cache, or this call's positions without one.
        return batch._with_tables(args, rope, cache.max_len if cache is not None else end, masked)

    @classmethod
    def decode(
        cls, start: torch.Tensor, cache: KVCache, args: ModelArgs, rope: RopeTables, masked: bool
    ) -> Batch:
        """The metadata of a capturable decode step: one token for every row of ``cache``, at the
        device-side positions ``start`` [max_batch], with no host value (the whole cache's shapes)."""
        N = cache.max_batch
        batch = cls(
            start=start,
            pos=start[:, None],
            rows=torch.arange(N, device=start.device),
            row_run=slice(0, N),
            kv_len=cache.max_len,
            same_start=None,
            cached=True,
            window=args.sliding_window,
        )
        return batch._with_tables(args, rope, cache.max_len, masked)

    def _with_tables(self, args: ModelArgs, rope: RopeTables, context: int, masked: bool) -> Batch:
        """Fill in what every layer would otherwise recompute: mask, RoPE cos/sin, query scale."""
        if masked:
            self.mask = causal_mask(self, args.n_rep)
        self.cos, self.sin = rope.at(self.pos, context, self.kv_len)  # [B, T, 64] each
        self.q_scale = llama4_q_scale(args, self.pos)
        return self


def _host_ints(x: int | Sequence[int] | torch.Tensor, n: int | None, name: str) -> list[int]:
    """Python ints from an int (broadcast to ``n``), a sequence or a tensor (read back once)."""
    if isinstance(x, int):
        if n is None:
            raise ValueError(f"{name} must be a sequence or a tensor")
        return [x] * n
    if torch.is_tensor(x) and x.dim() != 1:
        raise ValueError(f"{name} must be an int or one value per row ({n}), got shape {tuple(x.shape)}")
    values = x.tolist() if torch.is_tensor(x) else list(x)
    if n is not None and len(values) != n:
        raise ValueError(f"{name} must be an int or one value per row ({n}), got {x!r}")
    return [int(v) for v in values]


def causal_mask(b: Batch, n_rep: int) -> torch.Tensor | None:
    """Which keys each query may see, for the GQA fold (query row g * T + t sits at pos[t]).

    With a cache the keys are positions 0..kv_len-1 of each row; without one they are the chunk
    itself. Built once per forward and shared by every layer; None when nothing is masked
    (single-token decode with every row at the same position and no window), so SDPA takes its
    unmasked path.
    """
    B, T = b.pos.shape
    if b.cached and T == 1 and b.same_start is not None and b.window is None:
        return None
    L = b.kv_len if b.cached else T
    k_pos = torch.arange(L, device=b.pos.device).expand(B, L)
    if not b.cached:
        k_pos = k_pos + b.start[:, None]
    q_pos = b.pos.repeat(1, n_rep)[:, :, None]  # [B, n_rep * T, 1]: 4 query heads per KV head
    visible = k_pos[:, None, :] <= q_pos
    if b.window is not None:
        visible &= k_pos[:, None, :] > q_pos - b.window
    return visible[:, None]  # [B, 1, n_rep * T, L]
