"""The static KV cache: preallocated keys and values, one row per sequence (gpt-fast's layout).

Per layer ``[max_batch, n_kv_heads, max_len, head_dim]``: for Nemo 12B 40 layers of
``[N, 8, S, 128]``, 160 KiB per position of context in bf16. The caller owns a cache (an engine owns
one; the model never keeps one) and passes it to every forward as ``cache=``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .config import ModelArgs

LayerCache = tuple[torch.Tensor, torch.Tensor]  # one layer's (k, v), each [N, Hkv, S, D]


@dataclass
class KVCache:
    """Static, preallocated keys and values: per layer ``[max_batch, n_kv_heads, max_len, head_dim]``.

    Rows are slots: a sequence owns one row for its lifetime; the positions it has written are
    0..len-1 of that row. Nothing here tracks lengths: the caller passes ``start_pos`` per row.
    """

    k: list[torch.Tensor]
    v: list[torch.Tensor]

    @classmethod
    def allocate(
        cls, args: ModelArgs, max_batch: int, max_len: int, dtype: torch.dtype, device: torch.device | str
    ) -> KVCache:
        shape = (max_batch, args.n_kv_heads, max_len, args.head_dim)  # [N, 8, S, 128] for Nemo
        return cls(
            k=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)],
            v=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)],
        )

    @property
    def max_batch(self) -> int:
        return self.k[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    def layers(self) -> Iterator[LayerCache]:
        """Each layer's ``(k, v)``, first layer first: what a block reads and extends."""
        return zip(self.k, self.v, strict=True)

    # Row changes outside a forward go through these methods, so that a tensor-parallel driver can
    # make every rank's cache do the same (tp_driver.py).
    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Copy positions 0..length-1 of row ``src`` into row ``dst``, every layer (n choices, one prompt)."""
        for k, v in self.layers():
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]

    def clear_prefix(self, row: int, length: int) -> None:
        """Zero positions 0..length-1 of ``row``, every layer (a row a sequence leaves)."""
        for k, v in self.layers():
            k[row, :, :length] = 0
            v[row, :, :length] = 0
