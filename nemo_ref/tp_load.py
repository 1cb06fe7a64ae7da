"""Sharded loading: each tensor-parallel rank reads only its own slices of the safetensors files.

The checkpoint is validated exactly as :func:`nemo_ref.checkpoint.load_model` does (every header
against the config, before any data is read). Then, for each parameter, the rank reads the bytes of
its slice (:func:`nemo_ref.tp.shard_of`) with ``pread`` straight into the tensor's own memory: a
row slice (column-parallel wq/wk/wv/w1/w3, the vocabulary-parallel embedding and output) is one
contiguous read; a column slice (row-parallel wo/w2) is one read per row. No rank maps, reads or
holds the whole checkpoint; :func:`load_model_tp` reports the bytes read.

HF layout: the q/k rows are permuted within each head (docs/architecture.md), and a rank's heads
are whole, contiguous blocks of rows, so un-permuting the rank's block with its own head count
equals slicing the un-permuted full matrix (tests/tp/test_tp.py proves it for every rank).
"""

from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .backends import default_attn_backend
from .checkpoint.files import _ST_FLOAT, TensorInfo
from .checkpoint.names import _heads_to_permute, unpermute_from_hf
from .checkpoint.plan import Layout, _meta_model, _plan
from .model import AttnBackend, Transformer
from .tp import Shard, check_world_size, parallelize

__all__ = ["load_model_tp", "read_shard"]


def _data_start(file: Path) -> int:
    """Byte offset of a safetensors file's data section (after the 8-byte length and the header)."""
    with open(file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return 8 + n


def _pread_into(fd: int, buf: memoryview, offset: int) -> None:
    while len(buf):
        n = os.preadv(fd, [buf], offset)
        if n <= 0:
            raise OSError(f"unexpected end of file at byte {offset}")
        buf, offset = buf[n:], offset + n


def read_shard(info: TensorInfo, shard: Shard | None, data_start: int | None = None) -> torch.Tensor:
    """The ``shard`` of a tensor (all of it for None), in its stored dtype, reading only its bytes."""
    dtype = _ST_FLOAT[info.dtype]
    shape = list(info.shape)
    if shard is not None:
        shape[shard.dim] = shard.stop - shard.start
    out = torch.empty(shape, dtype=dtype)
    if out.numel() == 0:
        return out
    raw = memoryview(out.view(-1).view(torch.uint8).numpy())
    base = (_data_start(info.file) if data_start is None else data_start) + info.begin
    item = dtype.itemsize
    fd = os.open(info.file, os.O_RDONLY)
    try:
        if shard is None or shard.dim == 0:  # whole rows: one contiguous range
            row = (info.numel // info.shape[0]) * item if info.shape else item
            start = shard.start * row if shard is not None else 0
            _pread_into(fd, raw, base + start)
        else:  # columns [start, stop) of a 2-D [rows, cols] tensor: one read per row
            rows, cols = info.shape
            width = (shard.stop - shard.start) * item
            for r in range(rows):
                _pread_into(fd, raw[r * width : (r + 1) * width], base + (r * cols + shard.start) * item)
    finally:
        os.close(fd)
    return out


def load_model_tp(
    path: str | Path,
    dtype: torch.dtype | None = torch.bfloat16,
    device: torch.device | str = "cpu",
    attn_backend: AttnBackend | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    group: Any = None,
    layout: Layout | None = None,
    progress: bool = True,
) -> Transformer:
    """This rank's shard of the checkpoint at ``path``, as a tensor-parallel :class:`Transformer`.

    Arguments as :func:`nemo_ref.checkpoint.load_model`; ``rank`` / ``world_size`` default to the
    process group's (``torch.distributed`` must be initialised to run the model, not to load it).
    The model's ``tp_bytes_read`` is the number of tensor bytes this rank read from disk.
    """
    import torch.distributed as dist

    t0 = time.perf_counter()
    rank = dist.get_rank(group) if rank is None else rank
    world_size = dist.get_world_size(group) if world_size is None else world_size
    plan = _plan(path, layout)
    args = plan.args
    check_world_size(args, world_size)
    if dtype is None:
        if len(plan.dtypes) != 1:
            raise ValueError(
                f"{plan.path}: tensors are stored in several dtypes {dict(plan.dtypes)}; pass dtype="
            )
        dtype = _ST_FLOAT[next(iter(plan.dtypes))]
    device = torch.device(device)
    if attn_backend is None:
        attn_backend = default_attn_backend(device)
    starts = {f: _data_start(f) for f in plan.files}
    bytes_read = 0

    def fetch(name: str, shard: Shard | None) -> torch.Tensor:
        nonlocal bytes_read
        info = plan.tensors[name]
        tensor = read_shard(info, shard, starts[info.file])
        bytes_read += tensor.numel() * tensor.element_size()
        heads = _heads_to_permute(name, args) if plan.layout == "hf" else None
        if heads is not None:  # this rank's heads are whole: un-permute them with their own count
            tensor = unpermute_from_hf(tensor, heads // world_size).contiguous()
        return tensor.to(device=device, dtype=dtype)

    model = _meta_model(args, attn_backend=attn_backend, dtype=dtype)
    parallelize(model, rank, world_size, fetch, group)
    model.eval()
    model.random_weights = plan.metadata.get("nemo_ref.random_weights") == "true"
    model.tp_bytes_read = bytes_read
    if progress:
        print(
            f"rank {rank}/{world_size}: loaded its shard of {plan.path} ({plan.layout} layout): read "
            f"{bytes_read:,} of {plan.nbytes:,} bytes, {time.perf_counter() - t0:.2f} s",
            file=sys.stderr,
            flush=True,
        )
    return model
