"""The Mistral Nemo transformer: RMSNorm, grouped-query attention with RoPE, SwiGLU.

Parameter names are those of the mistral checkpoint layout (``layers.3.attention.wq.weight``...), so
``model.state_dict()`` *is* a ``consolidated.safetensors``. Shapes for Nemo 12B (dim 5120, 32 query
heads and 8 KV heads of 128): wq [4096, 5120], wk/wv [1024, 5120], wo [5120, 4096], w1/w3 [14336, 5120],
w2 [5120, 14336]. Note ``n_heads * head_dim = 4096 != dim``.

One forward serves every use: ``model(tokens, start_pos)`` runs tokens [B, T] whose first token sits
at ``start_pos`` (an int, or one position per row for batched decode), reading and extending the KV
cache passed as ``cache=`` (from ``new_cache``; the caller owns it) and attending only within
``tokens`` otherwise. A call's arguments become one :class:`~nemo_ref.batch.Batch` (positions, rows,
mask, RoPE cos/sin: batch.py) that every block reads; the cache itself is kv_cache.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .batch import Batch
from .config import ModelArgs
from .kv_cache import KVCache, LayerCache
from .rope import RopeTables, apply_rotary

__all__ = [
    "ATTN_BACKENDS",
    "Attention",
    "AttnBackend",
    "FeedForward",
    "GraphedDecode",
    "RMSNorm",
    "Transformer",
    "TransformerBlock",
]

AttnBackend = Literal["sdpa", "eager", "triton"]
ATTN_BACKENDS = ("sdpa", "eager", "triton")


class RMSNorm(nn.Module):
    """x / rms(x) * weight; the reduction in float32, cast back before the weight (as reference impls)."""

    def __init__(self, dim: int, eps: float, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


class Attention(nn.Module):
    """Grouped-query attention (Ainslie et al. 2023): n_heads queries share n_kv_heads keys/values.

    K/V are never repeated per query head: the n_rep query heads of a group are folded into the
    query-length axis (``[B, Hkv, n_rep * T, D]``), so one matmul per KV head serves all of them.
    """

    def __init__(self, args: ModelArgs, backend: AttnBackend = "sdpa", device=None, dtype=None):
        super().__init__()
        self.args = args
        self.backend = backend  # binds self._attend (the setter below)
        # `args` holds this module's own head counts: a tensor-parallel shard's are fewer (tp.py).
        hd = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * hd, bias=False, device=device, dtype=dtype)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * hd, bias=False, device=device, dtype=dtype)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * hd, bias=False, device=device, dtype=dtype)
        self.wo = nn.Linear(args.n_heads * hd, args.dim, bias=False, device=device, dtype=dtype)

    @property
    def backend(self) -> AttnBackend:
        return self._backend

    @backend.setter
    def backend(self, backend: AttnBackend) -> None:
        """Choose the attention function once, here, rather than by name on every layer call."""
        if backend == "triton":
            from .kernels.attention import attention as kernel  # Triton: imported only when chosen

            self._attend = functools.partial(_triton_attention, kernel)
        else:
            self._attend = functools.partial(_torch_attention, _sdpa if backend == "sdpa" else _eager)
        self._backend = backend

    def forward(self, x: torch.Tensor, meta: Batch, cache: LayerCache | None) -> torch.Tensor:
        B, T, _ = x.shape  # x [B, T, 5120]
        H, Hkv, D = self.args.n_heads, self.args.n_kv_heads, self.args.head_dim  # 32, 8, 128
        q = self.wq(x).view(B, T, H, D)  # [B, T, 32, 128]
        k = self.wk(x).view(B, T, Hkv, D)  # [B, T, 8, 128]
        v = self.wv(x).view(B, T, Hkv, D)  # [B, T, 8, 128]
        q, k = apply_rotary(q, meta.cos, meta.sin), apply_rotary(k, meta.cos, meta.sin)
        if meta.q_scale is not None:
            q = (q.float() * meta.q_scale[:, :, None, None]).type_as(q)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, 32, T, 128], [B, 8, T, 128] x 2

        if cache is not None:
            _write_cache(cache, k, v, meta)
        out = self._attend(q, k, v, cache, meta)  # [B, 32, T, 128]
        return self.wo(out.transpose(1, 2).reshape(B, T, H * D))  # [B, T, 4096] -> [B, T, 5120]


def _triton_attention(kernel, q, k, v, cache: LayerCache | None, meta: Batch) -> torch.Tensor:
    """The Triton kernels (kernels/attention.py): they read each row's own keys from the cache."""
    if cache is None:  # the chunk is its own cache: rows 0..B-1, positions from 0
        if meta.same_start != 0:
            raise ValueError("the triton backend without a KV cache needs start_pos == 0")
        return kernel(q, k, v, meta.start, window=meta.window)
    # The whole cache, read in place through the row index.
    return kernel(q, *cache, meta.start, rows=meta.rows, window=meta.window, max_len=meta.kv_len)


def _torch_attention(core: Callable, q, k, v, cache: LayerCache | None, meta: Batch) -> torch.Tensor:
    """A torch path: ``core(qg, k, v, mask)`` over the cache's keys, the GQA group folded into the
    query axis (``[B, Hkv, n_rep * T, D]``)."""
    if cache is not None:
        k, v = _read_cache(cache, meta)  # keys of positions 0..kv_len-1: [B, 8, kv_len, 128]
    B, H, T, D = q.shape
    n_kv = k.shape[1]
    qg = q.reshape(B, n_kv, (H // n_kv) * T, D)  # [B, 8, 4 T, 128]: head h = kv * n_rep + g
    return core(qg, k, v, meta.mask).reshape(B, H, T, D)


def _sdpa(qg, k, v, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + causal mask) v by PyTorch's fused kernels."""
    return F.scaled_dot_product_attention(qg, k, v, attn_mask=mask)


def _eager(qg, k, v, mask: torch.Tensor | None) -> torch.Tensor:
    """The same, as plain math in float32."""
    scores = (qg.float() @ k.float().transpose(-1, -2)) / math.sqrt(qg.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.float()).type_as(qg)


def _write_cache(cache: LayerCache, k: torch.Tensor, v: torch.Tensor, meta: Batch) -> None:
    """Store this chunk's keys/values [B, Hkv, T, D] at their rows and positions."""
    k_cache, v_cache = cache
    T = k.shape[2]
    if meta.row_run is not None and meta.same_start is not None:  # one slice: no index tensors
        s = meta.same_start
        k_cache[meta.row_run, :, s : s + T] = k
        v_cache[meta.row_run, :, s : s + T] = v
        return
    # Rows at different positions: one index_copy_ into the cache seen as [N * Hkv * S, D] rows
    # (an advanced-index assignment k_cache[rows, :, pos] = ... is ~25x slower on a CPU).
    _, Hkv, S, D = k_cache.shape
    heads = torch.arange(Hkv, device=k.device)
    idx = ((meta.rows[:, None, None] * Hkv + heads[None, :, None]) * S + meta.pos[:, None, :]).reshape(-1)
    k_cache.view(-1, D).index_copy_(0, idx, k.reshape(-1, D))
    v_cache.view(-1, D).index_copy_(0, idx, v.reshape(-1, D))


def _read_cache(cache: LayerCache, meta: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys/values of positions 0..kv_len-1 of the batch's rows, for the torch paths.

    A view when the rows are a contiguous run of the cache (the engine keeps its live rows so);
    otherwise an indexed copy. Positions past a row's own length are read but masked: they must
    hold finite values (the engine zeroes a row it releases), as ``0 * NaN`` is NaN in ``p @ v``.
    The Triton kernels read only each row's own keys.
    """
    k_cache, v_cache = cache
    if meta.row_run is not None:
        return k_cache[meta.row_run, :, : meta.kv_len], v_cache[meta.row_run, :, : meta.kv_len]
    return k_cache[meta.rows, :, : meta.kv_len], v_cache[meta.rows, :, : meta.kv_len]


class FeedForward(nn.Module):
    """SwiGLU (Shazeer 2020): w2(silu(w1 x) * w3 x)."""

    def __init__(self, args: ModelArgs, device=None, dtype=None):
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.hidden_dim, bias=False, device=device, dtype=dtype)
        self.w2 = nn.Linear(args.hidden_dim, args.dim, bias=False, device=device, dtype=dtype)
        self.w3 = nn.Linear(args.dim, args.hidden_dim, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # [B, T, 5120] -> [B, T, 14336] -> [B, T, 5120]


class TransformerBlock(nn.Module):
    """Pre-norm residual block: h = x + attn(norm(x)); out = h + ffn(norm(h))."""

    def __init__(self, args: ModelArgs, backend: AttnBackend, device=None, dtype=None):
        super().__init__()
        self.attention = Attention(args, backend, device=device, dtype=dtype)
        self.feed_forward = FeedForward(args, device=device, dtype=dtype)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps, device=device, dtype=dtype)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, meta: Batch, cache: LayerCache | None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), meta, cache)  # [B, T, 5120]
        return h + self.feed_forward(self.ffn_norm(h))  # [B, T, 5120]


class Transformer(nn.Module):
    """Token embeddings, ``n_layers`` blocks, a final RMSNorm and an (untied) output projection."""

    # Set by whoever fills the weights (demo.py; checkpoint/load.py and tp_load.py for a
    # make-checkpoint output); the CLI and the server label every output of a random-weight model with it.
    random_weights: bool
    tp: object | None  # where a tensor-parallel shard sits (tp.TPInfo, set by tp.parallelize)

    def __init__(
        self,
        args: ModelArgs,
        *,
        attn_backend: AttnBackend = "sdpa",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if attn_backend not in ATTN_BACKENDS:
            raise ValueError(f"attn_backend must be one of {ATTN_BACKENDS}, got {attn_backend!r}")
        self.args = args
        kw = {"device": device, "dtype": dtype}
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim, **kw)  # [131072, 5120]
        self.layers = nn.ModuleList(TransformerBlock(args, attn_backend, **kw) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps, **kw)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False, **kw)  # [131072, 5120]
        if args.tied_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.random_weights = False
        self.tp = None
        self.rope = RopeTables(args)  # cos/sin, built on first use on the tokens' device

    @property
    def attn_backend(self) -> str:
        return self.layers[0].attention.backend

    def set_attn_backend(self, backend: AttnBackend) -> None:
        if backend not in ATTN_BACKENDS:
            raise ValueError(f"attn_backend must be one of {ATTN_BACKENDS}, got {backend!r}")
        for layer in self.layers:
            layer.attention.backend = backend

    def new_cache(self, max_batch: int, max_len: int | None = None) -> KVCache:
        """A KV cache for this model, not attached: ``args.max_seq_len`` positions by default, at most
        ``args.max_positions`` (longer than the trained context only with a RoPE scaling)."""
        max_len = max_len or self.args.max_seq_len
        if not 1 <= max_len <= self.args.max_positions:
            raise ValueError(f"max_len must be in [1, {self.args.max_positions}], got {max_len}")
        w = self.tok_embeddings.weight
        heads = self.layers[0].attention.args  # a tensor-parallel rank's own heads (tp.py)
        return KVCache.allocate(heads, max_batch, max_len, w.dtype, w.device)

    @torch.inference_mode()
    def forward(
        self,
        tokens: torch.Tensor,
        start_pos: int | Sequence[int] | torch.Tensor = 0,
        *,
        rows: Sequence[int] | torch.Tensor | None = None,
        last_only: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Float32 logits [B, T, V] (or [B, 1, V] with ``last_only``) for ``tokens`` [B, T].

        ``start_pos``: position of ``tokens[:, 0]``, an int or one per row (a list, or a LongTensor
        [B]: rows at different positions, e.g. batched decode). ``cache``: the KV cache to read and
        extend (from :meth:`new_cache`; None: no cache); ``rows``: which of its rows these
        sequences own (default 0..B-1). Without a cache, tokens attend only to each other.

        Positions and rows are host values: pass Python ints/lists (the engine does). A tensor
        is read back once per call, before any layer runs (on a GPU, a device-to-host sync).
        """
        meta = Batch.build(tokens, start_pos, rows, cache, self.args, self.rope, self._masked)
        return self._logits(tokens, meta, cache, last_only)

    @torch.inference_mode()
    def decode_step(self, tokens: torch.Tensor, start: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One decode step of every row of ``cache``, with no host value at all: capturable.

        ``tokens`` [max_batch, 1], ``start`` LongTensor [max_batch] on the model's device (rows not
        in use can hold any position; their rows are written and their logits are garbage). Shapes
        never change and nothing is read back, so a CUDA graph can capture it (``GraphedDecode``),
        gpt-fast style: the torch paths attend over the whole cache length under a mask built
        on the device, the Triton kernels read each row's own keys. Float32 logits [max_batch, V].
        """
        N = cache.max_batch
        if tokens.shape != (N, 1) or start.shape != (N,):
            raise ValueError(f"decode_step takes tokens [{N}, 1] and start [{N}], got {tuple(tokens.shape)}")
        meta = Batch.decode(start, cache, self.args, self.rope, self._masked)
        return self._logits(tokens, meta, cache, last_only=False)[:, 0]

    @property
    def _masked(self) -> bool:
        """The torch attention paths take a boolean mask; the Triton kernels mask by position."""
        return self.attn_backend != "triton"

    def _logits(
        self, tokens: torch.Tensor, meta: Batch, cache: KVCache | None, last_only: bool
    ) -> torch.Tensor:
        """The network itself, top to bottom, once the call's metadata is built."""
        h = self.tok_embeddings(tokens)  # [B, T, 5120]
        layer_caches = cache.layers() if cache is not None else [None] * len(self.layers)
        for layer, layer_cache in zip(self.layers, layer_caches, strict=True):
            h = layer(h, meta, layer_cache)  # [B, T, 5120]
        if last_only:
            h = h[:, -1:]  # [B, 1, 5120]
        return self.output(self.norm(h)).float()  # [B, T, 131072] float32

    def init_random(self, seed: int = 0, std: float = 0.02) -> Transformer:
        """Deterministic random weights (normal(0, std); norms 1), identical on every machine."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith("norm.weight"):
                    param.fill_(1.0)
                else:
                    value = torch.randn(param.shape, generator=g, dtype=torch.float32) * std
                    param.copy_(value.to(param.dtype))
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class GraphedDecode:
    """``model.decode_step`` captured once in a CUDA graph and replayed every step (gpt-fast's idea,
    with ``torch.cuda.graphs``): one launch for the whole step instead of hundreds.

    ``step(tokens [max_batch, 1], start [max_batch])`` copies its inputs into the captured
    buffers, replays, and returns the captured logits buffer (overwritten by the next step).
    Needs a CUDA device: on a CPU ``decode_step`` runs as it is (the same code, uncaptured).
    """

    def __init__(self, model: Transformer, cache: KVCache, warmup: int = 2):
        device = model.tok_embeddings.weight.device
        N = cache.max_batch
        self.model, self.cache = model, cache
        self.tokens = torch.zeros((N, 1), dtype=torch.long, device=device)
        self.start = torch.zeros(N, dtype=torch.long, device=device)
        self.graph = None
        if device.type != "cuda":
            return
        # Warm up on a side stream (Triton compiles, cuBLAS picks kernels), then capture. Row
        # position 0 of every row is written by these runs: only rows without a sequence may be
        # in the cache when the graph is built (the engine builds it before admitting anything).
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                model.decode_step(self.tokens, self.start, cache)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = model.decode_step(self.tokens, self.start, cache)

    def __call__(self, tokens: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        self.tokens.copy_(tokens)
        self.start.copy_(start)
        if self.graph is None:
            return self.model.decode_step(self.tokens, self.start, self.cache)
        self.graph.replay()
        return self.logits
