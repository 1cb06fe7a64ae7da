"""The Mistral Nemo transformer: RMSNorm, grouped-query attention with RoPE, SwiGLU, a static KV cache.

Parameter names are those of the mistral checkpoint layout (``layers.3.attention.wq.weight``...), so
``model.state_dict()`` *is* a ``consolidated.safetensors``. Shapes for Nemo 12B (dim 5120, 32 query
heads and 8 KV heads of 128): wq [4096, 5120], wk/wv [1024, 5120], wo [5120, 4096], w1/w3 [14336, 5120],
w2 [5120, 14336]. Note ``n_heads * head_dim = 4096 != dim``.

One forward serves every use: ``model(tokens, start_pos)`` runs tokens [B, T] whose first token sits
at ``start_pos`` (an int, or one position per row for batched decode), reading and extending the KV
cache passed as ``cache=`` (from ``new_cache``; the caller owns it) and attending only within
``tokens`` otherwise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelArgs
from .rope import apply_rotary, llama4_q_scale, rope_table

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


@dataclass
class KVCache:
    """Static, preallocated keys and values: per layer ``[max_batch, n_kv_heads, max_len, head_dim]``.

    Rows are slots: a sequence owns one row for its lifetime; the positions it has written are
    0..len-1 of that row. Nothing here tracks lengths: the caller passes ``start_pos`` per row.
    """

    k: list[torch.Tensor]
    v: list[torch.Tensor]

    @classmethod
    def allocate(cls, args: ModelArgs, max_batch: int, max_len: int, dtype, device) -> KVCache:
        shape = (max_batch, args.n_kv_heads, max_len, args.head_dim)
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

    # Row changes outside a forward go through these methods, so that a tensor-parallel driver can
    # make every rank's cache do the same (tp_driver.py).
    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Copy positions 0..length-1 of row ``src`` into row ``dst``, every layer (n choices, one prompt)."""
        for k, v in zip(self.k, self.v, strict=True):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]

    def clear_prefix(self, row: int, length: int) -> None:
        """Zero positions 0..length-1 of ``row``, every layer (a row a sequence leaves)."""
        for k, v in zip(self.k, self.v, strict=True):
            k[row, :, :length] = 0
            v[row, :, :length] = 0


@dataclass
class Batch:
    """Where the tokens of one forward call sit: built once per call, handed to every layer.

    mistral-inference's ``CacheInputMetadata`` idea: whatever needs a host value (how many keys to
    read, whether the rows form a contiguous run of the cache) is decided here, from the caller's
    host-side integers, so no layer ever reads a tensor back (a device-to-host sync blocks the
    CPU's run-ahead and CUDA-graph capture). The device tensors are built here once too.
    """

    start: torch.Tensor  # [B] int64, position of tokens[:, 0] in each row
    pos: torch.Tensor  # [B, T] int64, absolute position of every token
    rows: torch.Tensor  # [B] int64, the cache row of each batch row
    row_run: slice | None  # the rows are cache rows r0..r0+B-1 in order: read the cache as a view
    kv_len: int  # keys 0..kv_len-1 exist for some row (longest row's end); host-side
    same_start: int | None  # the position every row starts at, when the host knows it is one
    cached: bool  # a KV cache is read and extended
    window: int | None = None  # sliding window: keys p - window < j <= p
    mask: torch.Tensor | None = None  # [B, 1, n_rep * T, kv_len] for the torch paths; None: no mask
    cos: torch.Tensor | None = None  # [B, T, head_dim / 2] RoPE at each token's position (64 for Nemo)
    sin: torch.Tensor | None = None  # [B, T, head_dim / 2]
    q_scale: torch.Tensor | None = None  # [B, T] llama4 query scaling; None without it (Nemo)


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
    q_pos = b.pos.repeat(1, n_rep)[:, :, None]  # [B, n_rep * T, 1]
    visible = k_pos[:, None, :] <= q_pos
    if b.window is not None:
        visible &= k_pos[:, None, :] > q_pos - b.window
    return visible[:, None]


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

    def forward(
        self, x: torch.Tensor, p: Batch, cache: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        B, T, _ = x.shape  # x [B, T, 5120] for Nemo
        H, Hkv, D = self.args.n_heads, self.args.n_kv_heads, self.args.head_dim  # 32, 8, 128 for Nemo
        q = self.wq(x).view(B, T, H, D)
        k = self.wk(x).view(B, T, Hkv, D)
        v = self.wv(x).view(B, T, Hkv, D)
        q, k = apply_rotary(q, p.cos, p.sin), apply_rotary(k, p.cos, p.sin)
        if p.q_scale is not None:
            q = (q.float() * p.q_scale[:, :, None, None]).type_as(q)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, T, D]

        if cache is not None:
            _write_cache(cache, k, v, p)
        out = self._attend(q, k, v, cache, p)  # [B, H, T, D]
        return self.wo(out.transpose(1, 2).reshape(B, T, H * D))


def _triton_attention(kernel, q, k, v, cache, p: Batch) -> torch.Tensor:
    """The Triton kernels (kernels/attention.py): they read each row's own keys from the cache."""
    if cache is None:  # the chunk is its own cache: rows 0..B-1, positions from 0
        if p.same_start != 0:
            raise ValueError("the triton backend without a KV cache needs start_pos == 0")
        return kernel(q, k, v, p.start, window=p.window)
    # The whole cache, read in place through the row index.
    return kernel(q, *cache, p.start, rows=p.rows, window=p.window, max_len=p.kv_len)


def _torch_attention(core: Callable, q, k, v, cache, p: Batch) -> torch.Tensor:
    """A torch path: ``core(qg, k, v, mask)`` over the cache's keys, the GQA group folded into the
    query axis (``[B, Hkv, n_rep * T, D]``)."""
    if cache is not None:
        k, v = _read_cache(cache, p)  # keys of positions 0..kv_len-1
    B, H, T, D = q.shape
    n_kv = k.shape[1]
    qg = q.reshape(B, n_kv, (H // n_kv) * T, D)  # query head h = kv * n_rep + g, as in checkpoints
    return core(qg, k, v, p.mask).reshape(B, H, T, D)


def _sdpa(qg, k, v, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + causal mask) v by PyTorch's fused kernels."""
    return F.scaled_dot_product_attention(qg, k, v, attn_mask=mask)


def _eager(qg, k, v, mask: torch.Tensor | None) -> torch.Tensor:
    """The same, as plain math in float32."""
    scores = (qg.float() @ k.float().transpose(-1, -2)) / math.sqrt(qg.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.float()).type_as(qg)


def _write_cache(cache, k: torch.Tensor, v: torch.Tensor, p: Batch) -> None:
    """Store this chunk's keys/values [B, Hkv, T, D] at their rows and positions."""
    k_cache, v_cache = cache
    T = k.shape[2]
    if p.row_run is not None and p.same_start is not None:  # one slice: no index tensors
        s = p.same_start
        k_cache[p.row_run, :, s : s + T] = k
        v_cache[p.row_run, :, s : s + T] = v
        return
    # Rows at different positions: one index_copy_ into the cache seen as [N * Hkv * S, D] rows
    # (an advanced-index assignment k_cache[rows, :, pos] = ... is ~25x slower on a CPU).
    _, Hkv, S, D = k_cache.shape
    heads = torch.arange(Hkv, device=k.device)
    idx = ((p.rows[:, None, None] * Hkv + heads[None, :, None]) * S + p.pos[:, None, :]).reshape(-1)
    k_cache.view(-1, D).index_copy_(0, idx, k.reshape(-1, D))
    v_cache.view(-1, D).index_copy_(0, idx, v.reshape(-1, D))


def _read_cache(cache, p: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys/values of positions 0..kv_len-1 of the batch's rows, for the torch paths.

    A view when the rows are a contiguous run of the cache (the engine keeps its live rows so);
    otherwise an indexed copy. Positions past a row's own length are read but masked: they must
    hold finite values (the engine zeroes a row it releases), as ``0 * NaN`` is NaN in ``p @ v``.
    The Triton kernels read only each row's own keys.
    """
    k_cache, v_cache = cache
    if p.row_run is not None:
        return k_cache[p.row_run, :, : p.kv_len], v_cache[p.row_run, :, : p.kv_len]
    return k_cache[p.rows, :, : p.kv_len], v_cache[p.rows, :, : p.kv_len]


class FeedForward(nn.Module):
    """SwiGLU (Shazeer 2020): w2(silu(w1 x) * w3 x)."""

    def __init__(self, args: ModelArgs, device=None, dtype=None):
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.hidden_dim, bias=False, device=device, dtype=dtype)
        self.w2 = nn.Linear(args.hidden_dim, args.dim, bias=False, device=device, dtype=dtype)
        self.w3 = nn.Linear(args.dim, args.hidden_dim, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: h = x + attn(norm(x)); out = h + ffn(norm(h))."""

    def __init__(self, args: ModelArgs, backend: AttnBackend, device=None, dtype=None):
        super().__init__()
        self.attention = Attention(args, backend, device=device, dtype=dtype)
        self.feed_forward = FeedForward(args, device=device, dtype=dtype)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps, device=device, dtype=dtype)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps, device=device, dtype=dtype)

    def forward(
        self, x: torch.Tensor, p: Batch, cache: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), p, cache)  # [B, T, dim]
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """Token embeddings, ``n_layers`` blocks, a final RMSNorm and an (untied) output projection."""

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
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim, **kw)
        self.layers = nn.ModuleList(TransformerBlock(args, attn_backend, **kw) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps, **kw)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False, **kw)
        if args.tied_embeddings:
            self.output.weight = self.tok_embeddings.weight
        # Set by whoever fills the weights (demo.py, checkpoint/load.py for a make-checkpoint output);
        # the CLI and the server label every output of a random-weight model with it.
        self.random_weights: bool = False
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

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

    def _rope_tables(self, length: int, needed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin tables; ``length`` is the context in use: the cache length, or without a cache the
        positions of this call (dynamic NTK's frequencies depend on it, as in transformers, where a
        forward over L positions scales for L)."""
        dynamic = self.args.rope_scaling.rope_type == "dynamic"
        r = self._rope
        fits = (
            r is not None
            and r[0].device == device
            and (r[0].shape[0] == length if dynamic else r[0].shape[0] >= needed)
        )
        if not fits:
            cos, sin = rope_table(self.args, length if dynamic else max(length, needed))
            self._rope = (cos.to(device), sin.to(device))
        return self._rope

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
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, seq], got shape {tuple(tokens.shape)}")
        B, T = tokens.shape
        starts = _host_ints(start_pos, B, "start_pos")
        row_list = list(range(B)) if rows is None else _host_ints(rows, None, "rows")
        if len(row_list) != B:
            raise ValueError(f"rows must name {B} cache rows, got {len(row_list)}")
        end = max(starts) + T
        limit = cache.max_len if cache is not None else self.args.max_positions
        if min(starts) < 0 or end > limit:
            raise ValueError(f"positions must lie in [0, {limit}); this call reaches {end}")
        if cache is not None and (min(row_list) < 0 or max(row_list) >= cache.max_batch):
            raise ValueError(f"the KV cache has rows 0..{cache.max_batch - 1}; this call uses {row_list}")
        device = tokens.device
        start = torch.tensor(starts, dtype=torch.long, device=device)
        r0 = row_list[0]
        batch = Batch(
            start=start,
            pos=start[:, None] + torch.arange(T, device=device),
            rows=torch.tensor(row_list, dtype=torch.long, device=device),
            row_run=slice(r0, r0 + B) if row_list == list(range(r0, r0 + B)) else None,
            kv_len=end,
            same_start=starts[0] if len(set(starts)) == 1 else None,
            cached=cache is not None,
            window=self.args.sliding_window,
        )
        # The rope table spans the context in use: the cache, or this call's positions without one
        # (dynamic NTK scales for it, as transformers does for a forward over L positions).
        return self._forward(
            tokens, batch, cache, last_only, rope_len=cache.max_len if cache is not None else end
        )

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
        batch = Batch(
            start=start,
            pos=start[:, None],
            rows=torch.arange(N, device=start.device),
            row_run=slice(0, N),
            kv_len=cache.max_len,
            same_start=None,
            cached=True,
            window=self.args.sliding_window,
        )
        return self._forward(tokens, batch, cache, False, rope_len=cache.max_len)[:, 0]

    def _forward(
        self, tokens: torch.Tensor, batch: Batch, kv: KVCache | None, last_only: bool, rope_len: int
    ) -> torch.Tensor:
        """The layers, top to bottom, for a batch whose metadata is already built."""
        if self.attn_backend != "triton":
            batch.mask = causal_mask(batch, self.args.n_rep)
        cos_t, sin_t = self._rope_tables(rope_len, batch.kv_len, tokens.device)
        batch.cos, batch.sin = cos_t[batch.pos], sin_t[batch.pos]  # [B, T, head_dim / 2]
        batch.q_scale = llama4_q_scale(self.args, batch.pos)

        h = self.tok_embeddings(tokens)  # [B, T, dim]
        for i, layer in enumerate(self.layers):
            h = layer(h, batch, (kv.k[i], kv.v[i]) if kv is not None else None)
        if last_only:
            h = h[:, -1:]
        return self.output(self.norm(h)).float()  # [B, T, vocab] float32

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
