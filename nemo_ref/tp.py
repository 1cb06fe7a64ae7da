"""Tensor parallelism (Megatron-LM, Shoeybi et al. 2019) over torch.distributed: shard a built model.

The model is not rewritten: :func:`parallelize` takes a built :class:`~nemo_ref.model.Transformer`
(real weights, or the ``meta`` skeleton the sharded loader fills) and, on each of N ranks, keeps only
that rank's slice of every matrix and swaps four modules for their parallel versions::

    tok_embeddings  vocabulary-parallel  rows [r V/N, (r+1) V/N); other ids give 0; all-reduce
    wq, wk, wv      column-parallel      the rows of this rank's heads (KV heads r Hkv/N.. and the
                                         query heads of those groups); no communication
    wo              row-parallel         the matching input columns; one all-reduce of [B, T, dim]
    w1, w3          column-parallel      hidden rows [r F/N, (r+1) F/N); no communication
    w2              row-parallel         the matching columns; one all-reduce
    norms           replicated
    output          vocabulary-parallel  logits of rows [r V/N, ...); all-gathered to [B, T, V]

A forward is therefore 2 n_layers + 1 all-reduces and one all-gather, and every rank ends with the
same full float32 logits. Each attention module gets the head counts it now holds
(``attention.args``), so the unchanged attention code computes its local heads, and the KV cache
(``model.new_cache``) holds only those heads. The valid world sizes divide the KV heads (the query
heads of a group stay together), the hidden width and the vocabulary: 1, 2, 4, 8 for Nemo.

Two ways to run it: SPMD (every rank runs the same script and calls the model, as gpt-fast), or
driven (``tp_driver.py``): rank 0 runs generate / the Engine / the server on a
:class:`~nemo_ref.tp_driver.TPDriver`, which broadcasts each call to the other ranks' ``follow()``.
Sharded loading from a checkpoint, reading only each rank's bytes, is ``tp_load.load_model_tp``.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .config import ModelArgs
from .model import Transformer

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RowParallelLinear",
    "Shard",
    "TPError",
    "TPInfo",
    "VocabParallelEmbedding",
    "VocabParallelLinear",
    "check_world_size",
    "env_world_size",
    "init_from_env",
    "parallelize",
    "shard_model",
    "shard_of",
    "valid_world_sizes",
]

DEFAULT_TIMEOUT_S = 300.0  # a collective waiting longer than this means a rank is stuck: fail


class TPError(RuntimeError):
    """Tensor parallelism cannot go on: a bad world size, or a rank failed or stopped answering."""


# ---- which slice each rank holds ---------------------------------------------------------------


def valid_world_sizes(args: ModelArgs) -> list[int]:
    """World sizes that split the KV heads, the hidden width and the vocabulary evenly."""
    g = math.gcd(args.n_kv_heads, args.hidden_dim, args.vocab_size)
    return [n for n in range(1, g + 1) if g % n == 0]


def check_world_size(args: ModelArgs, world_size: int) -> None:
    """Raise :class:`TPError` naming the constraint when ``world_size`` cannot split this model."""
    valid = valid_world_sizes(args)
    if world_size in valid:
        return
    why = (
        ["the world size must be >= 1"]
        if world_size < 1
        else [
            f"{name} ({value}) is not divisible by {world_size}{note}"
            for name, value, note in (
                ("n_kv_heads", args.n_kv_heads, " (a KV head and its query heads stay on one rank)"),
                ("hidden_dim", args.hidden_dim, ""),
                ("vocab_size", args.vocab_size, ""),
            )
            if value % world_size
        ]
    )
    raise TPError(
        f"tensor parallelism over {world_size} ranks is not possible for this model: {'; '.join(why)}; "
        f"valid world sizes: {', '.join(map(str, valid))}"
    )


@dataclass(frozen=True)
class Shard:
    """Rows (``dim`` 0) or columns (``dim`` 1) ``[start, stop)`` of a parameter."""

    dim: int
    start: int
    stop: int


def shard_of(name: str, args: ModelArgs, rank: int, world_size: int) -> Shard | None:
    """The slice of parameter ``name`` (mistral names) that ``rank`` holds; None: replicated."""
    hd = args.head_dim
    split = {  # module -> (dim, full size along it)
        "wq": (0, args.n_heads * hd),
        "wk": (0, args.n_kv_heads * hd),
        "wv": (0, args.n_kv_heads * hd),
        "wo": (1, args.n_heads * hd),
        "w1": (0, args.hidden_dim),
        "w3": (0, args.hidden_dim),
        "w2": (1, args.hidden_dim),
        "tok_embeddings": (0, args.vocab_size),
        "output": (0, args.vocab_size),
    }
    module = name.removesuffix(".weight").rpartition(".")[2]
    if module not in split:
        return None  # RMSNorm weights
    dim, size = split[module]
    n = size // world_size
    return Shard(dim, rank * n, (rank + 1) * n)


# ---- the parallel modules ----------------------------------------------------------------------


@dataclass(frozen=True)
class TPInfo:
    """Where a sharded model sits: ``model.tp``."""

    rank: int
    world_size: int
    group: Any = None  # a torch.distributed process group; None is the default (world) group


def _parameter(t: torch.Tensor) -> nn.Parameter:
    """``t`` itself when it is a parameter already (a tied output shares the embedding's)."""
    return t if isinstance(t, nn.Parameter) else nn.Parameter(t, requires_grad=False)


class RowParallelLinear(nn.Module):
    """``y = sum over ranks of x_r W_r^T``: this rank's input columns, then one all-reduce.

    The input ``x_r`` is already split (the local heads' outputs, or the local hidden units), so the
    only communication is the sum of the N partial products.
    """

    def __init__(self, weight: torch.Tensor, group: Any = None):
        super().__init__()
        self.weight = _parameter(weight)  # [out, in / N]
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        dist.all_reduce(y, group=self.group)
        return y

    def extra_repr(self) -> str:
        return f"local weight {list(self.weight.shape)}, all-reduce"


class VocabParallelEmbedding(nn.Module):
    """Rows ``[start, start + V/N)`` of the embedding table; ids elsewhere contribute 0; all-reduce.

    Exactly one rank contributes each row and the others add zeros, so the sum is exact.
    """

    def __init__(self, weight: torch.Tensor, start: int, group: Any = None):
        super().__init__()
        self.weight = _parameter(weight)  # [V / N, dim]
        self.start = start
        self.group = group

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        local = tokens - self.start
        outside = (local < 0) | (local >= self.weight.shape[0])
        h = F.embedding(local.masked_fill(outside, 0), self.weight)  # [B, T, dim]
        h = h.masked_fill(outside[..., None], 0)
        dist.all_reduce(h, group=self.group)
        return h

    def extra_repr(self) -> str:
        return f"rows {self.start}..{self.start + self.weight.shape[0]}, all-reduce"


class VocabParallelLinear(nn.Module):
    """Logits for this rank's vocabulary rows, all-gathered into the full ``[B, T, V]`` on every rank."""

    def __init__(self, weight: torch.Tensor, world_size: int, group: Any = None):
        super().__init__()
        self.weight = _parameter(weight)  # [V / N, dim]
        self.world_size = world_size
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = F.linear(x, self.weight)  # [B, T, V / N]
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local, group=self.group)
        return torch.cat(parts, dim=-1)  # [B, T, V]

    def extra_repr(self) -> str:
        return f"local weight {list(self.weight.shape)}, all-gather"


# ---- sharding a built model --------------------------------------------------------------------

Fetch = Callable[[str, Shard | None], torch.Tensor]  # (parameter name, slice) -> this rank's tensor


def parallelize(
    model: Transformer, rank: int, world_size: int, fetch: Fetch, group: Any = None
) -> Transformer:
    """Make ``model`` this rank's shard, in place: every parameter becomes ``fetch(name, shard)``.

    ``fetch`` returns the slice :func:`shard_of` names (the full tensor for None), in the dtype and
    on the device wanted; the model may be on the ``meta`` device. Collectives use ``group``.
    """
    args: ModelArgs = model.args
    check_world_size(args, world_size)
    if not 0 <= rank < world_size:
        raise TPError(f"rank must be in [0, {world_size}), got {rank}")
    for name, _ in list(model.named_parameters()):  # a tied output is the embedding: listed once
        tensor = fetch(name, shard_of(name, args, rank, world_size))
        module_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(module_name), leaf, nn.Parameter(tensor, requires_grad=False))

    local = args.replace(n_heads=args.n_heads // world_size, n_kv_heads=args.n_kv_heads // world_size)
    for layer in model.layers:
        attn, ffn = layer.attention, layer.feed_forward
        attn.args = local  # the heads this rank computes; the KV cache follows it
        for linear in (attn.wq, attn.wk, attn.wv, ffn.w1, ffn.w3):
            linear.out_features = linear.weight.shape[0]
        attn.wo = RowParallelLinear(attn.wo.weight, group)
        ffn.w2 = RowParallelLinear(ffn.w2.weight, group)
    vocab_start = shard_of("output.weight", args, rank, world_size).start
    model.tok_embeddings = VocabParallelEmbedding(model.tok_embeddings.weight, vocab_start, group)
    out_weight = model.tok_embeddings.weight if args.tied_embeddings else model.output.weight
    model.output = VocabParallelLinear(out_weight, world_size, group)
    model.tp = TPInfo(rank, world_size, group)
    return model


def shard_model(
    model: Transformer, rank: int | None = None, world_size: int | None = None, group: Any = None
) -> Transformer:
    """Keep only this rank's slices of a model built with all its weights (e.g. the embedded demo).

    Rank and world size default to the process group's. Every rank must hold the same weights.
    """
    rank = dist.get_rank(group) if rank is None else rank
    world_size = dist.get_world_size(group) if world_size is None else world_size
    full = dict(model.named_parameters())

    def fetch(name: str, shard: Shard | None) -> torch.Tensor:
        t = full[name].detach()
        if shard is not None:
            t = t.narrow(shard.dim, shard.start, shard.stop - shard.start)
        return t.contiguous().clone()  # its own memory: the full tensor is freed

    parallelize(model, rank, world_size, fetch, group)
    full.clear()
    return model


# ---- the process group -------------------------------------------------------------------------


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str | None = None, timeout_s: float | None = None) -> torch.device:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT); this rank's device.

    NCCL on CUDA (device ``cuda:LOCAL_RANK``), gloo on CPU. ``timeout_s`` bounds every collective
    (default ``NEMO_REF_TP_TIMEOUT`` seconds, else :data:`DEFAULT_TIMEOUT_S`): a rank that stops
    answering makes the others fail instead of waiting forever.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if timeout_s is None:
        timeout_s = float(os.environ.get("NEMO_REF_TP_TIMEOUT", DEFAULT_TIMEOUT_S))
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
        )
    return dev
