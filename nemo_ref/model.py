"""The Mistral Nemo transformer: RMSNorm, grouped-query attention with RoPE, SwiGLU, a static KV cache.

Parameter names are those of the mistral checkpoint layout (``layers.3.attention.wq.weight``...), so
``model.state_dict()`` *is* a ``consolidated.safetensors``. Shapes for Nemo 12B (dim 5120, 32 query
heads and 8 KV heads of 128): wq [4096, 5120], wk/wv [1024, 5120], wo [5120, 4096], w1/w3 [14336, 5120],
w2 [5120, 14336]. Note ``n_heads * head_dim = 4096 != dim``.

One forward serves every use: ``model(tokens, start_pos)`` runs tokens [B, T] whose first token sits
at ``start_pos`` (an int, or one position per row for batched decode), reading and extending the KV
cache when one is set up (``setup_cache``) and attending only within ``tokens`` otherwise.
"""

from __future__ import annotations

import math
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
class Positions:
    """Where the tokens of one forward call sit: rows of the cache, and absolute positions."""

    start: torch.Tensor  # [B] int64, position of tokens[:, 0] in each row
    pos: torch.Tensor  # [B, T] int64, absolute position of every token
    rows: torch.Tensor | None  # [B] cache rows, or None for rows 0..B-1
    uniform: bool  # every row starts at the same position
    mask: torch.Tensor | None = None  # causal mask [B, 1, n_rep * T, L], None when all-true


def causal_mask(p: Positions, n_rep: int, cached: bool) -> torch.Tensor | None:
    """Which keys each query may see, for the GQA fold (query row g * T + t sits at pos[t]).

    With a cache the keys are positions 0..L-1 of each row (L = max start + T); without one they are
    the chunk itself. Built once per forward and shared by every layer; None when nothing is masked
    (single-token decode with every row at the same position), so SDPA takes its unmasked path.
    """
    B, T = p.pos.shape
    if cached and T == 1 and p.uniform:
        return None
    L = int(p.start.max()) + T if cached else T
    k_pos = torch.arange(L, device=p.pos.device).expand(B, L)
    if not cached:
        k_pos = k_pos + p.start[:, None]
    q_pos = p.pos.repeat(1, n_rep)  # [B, n_rep * T]
    return (k_pos[:, None, :] <= q_pos[:, :, None])[:, None]


class Attention(nn.Module):
    """Grouped-query attention (Ainslie et al. 2023): n_heads queries share n_kv_heads keys/values.

    K/V are never repeated per query head: the n_rep query heads of a group are folded into the
    query-length axis (``[B, Hkv, n_rep * T, D]``), so one matmul per KV head serves all of them.
    """

    def __init__(self, args: ModelArgs, backend: AttnBackend = "sdpa", device=None, dtype=None):
        super().__init__()
        self.args = args
        self.backend = backend
        hd = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * hd, bias=False, device=device, dtype=dtype)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * hd, bias=False, device=device, dtype=dtype)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * hd, bias=False, device=device, dtype=dtype)
        self.wo = nn.Linear(args.n_heads * hd, args.dim, bias=False, device=device, dtype=dtype)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        p: Positions,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
        q_scale: torch.Tensor | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        a = self.args
        q = self.wq(x).view(B, T, a.n_heads, a.head_dim)
        k = self.wk(x).view(B, T, a.n_kv_heads, a.head_dim)
        v = self.wv(x).view(B, T, a.n_kv_heads, a.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if q_scale is not None:
            q = (q.float() * q_scale[:, :, None, None]).type_as(q)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, T, D]

        if cache is not None:
            k, v = _write_and_read_cache(cache, k, v, p)  # keys of positions 0..L-1

        if self.backend == "triton":
            from .kernels.attention import attention as triton_attention

            if cache is None and not bool((p.start == 0).all()):
                raise ValueError("the triton backend without a KV cache needs start_pos == 0")
            out = triton_attention(q, k, v, p.start)
        else:
            out = self._attend(q, k, v, p.mask)
        return self.wo(out.transpose(1, 2).reshape(B, T, a.n_heads * a.head_dim))

    def _attend(self, q, k, v, mask: torch.Tensor | None) -> torch.Tensor:
        """softmax(q k^T / sqrt(D) + causal mask) v, with the GQA group folded into the query axis."""
        B, H, T, D = q.shape
        n_kv = k.shape[1]
        qg = q.reshape(B, n_kv, (H // n_kv) * T, D)  # query head h = kv * n_rep + g, as in checkpoints
        if self.backend == "sdpa":
            out = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask)
        else:  # eager: the plain math, in float32
            scores = (qg.float() @ k.float().transpose(-1, -2)) / math.sqrt(D)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            out = (scores.softmax(-1) @ v.float()).type_as(q)
        return out.reshape(B, H, T, D)


def _write_and_read_cache(cache, k, v, p: Positions):
    """Store this chunk's keys/values at their positions; return keys/values 0..L-1 of its rows."""
    k_cache, v_cache = cache
    B, _, T, _ = k.shape
    L = int(p.start.max()) + T
    if p.rows is None and p.uniform:
        s = int(p.start[0])
        k_cache[:B, :, s : s + T] = k
        v_cache[:B, :, s : s + T] = v
        return k_cache[:B, :, :L], v_cache[:B, :, :L]  # views: no copy
    rows = p.rows if p.rows is not None else torch.arange(B, device=k.device)
    # Advanced indices on dims 0 and 2 (separated by a slice) put the indexed dims first: [B, T, ...].
    k_cache[rows[:, None], :, p.pos] = k.transpose(1, 2)
    v_cache[rows[:, None], :, p.pos] = v.transpose(1, 2)
    return k_cache[rows, :, :L], v_cache[rows, :, :L]


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

    def forward(self, x, cos, sin, p, cache, q_scale) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, p, cache, q_scale)
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
        self.cache: KVCache | None = None
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

    def setup_cache(self, max_batch: int, max_len: int | None = None) -> KVCache:
        """Allocate the model's own KV cache, used by every call that passes no ``cache=``."""
        self.cache = self.new_cache(max_batch, max_len)
        return self.cache

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
        start_pos: int | torch.Tensor = 0,
        *,
        rows: torch.Tensor | None = None,
        last_only: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Float32 logits [B, T, V] (or [B, 1, V] with ``last_only``) for ``tokens`` [B, T].

        ``start_pos``: position of ``tokens[:, 0]``, an int or a LongTensor [B] (rows at different
        positions, e.g. batched decode). ``cache``: the KV cache to read and extend (default: the
        one from ``setup_cache``, if any); ``rows``: which of its rows these sequences own (default
        0..B-1). Without a cache, tokens attend only to each other.
        """
        kv = cache if cache is not None else self.cache
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, seq], got shape {tuple(tokens.shape)}")
        B, T = tokens.shape
        device = tokens.device
        uniform = not torch.is_tensor(start_pos)
        start = (
            torch.full((B,), start_pos, dtype=torch.long, device=device)
            if uniform
            else start_pos.to(device=device, dtype=torch.long)
        )
        if start.shape != (B,):
            raise ValueError(f"start_pos must be an int or a tensor of shape [{B}]")
        end = int(start.max()) + T
        limit = kv.max_len if kv is not None else self.args.max_positions
        if int(start.min()) < 0 or end > limit:
            raise ValueError(f"positions must lie in [0, {limit}); this call reaches {end}")
        window = self.args.sliding_window
        if window is not None and end > window:  # within the window, causal attention is the same
            raise ValueError(
                f"this model attends within a sliding window of {window} positions, which nemo_ref "
                f"does not implement yet; this call reaches position {end}: keep sequences <= {window}"
            )
        if kv is not None:
            n_rows = kv.max_batch
            if (rows is None and n_rows < B) or (rows is not None and int(rows.max()) >= n_rows):
                raise ValueError(f"the KV cache has {n_rows} rows; this call needs more")
        pos = start[:, None] + torch.arange(T, device=device)
        p = Positions(start=start, pos=pos, rows=rows, uniform=uniform)
        if self.attn_backend != "triton":
            p.mask = causal_mask(p, self.args.n_rep, cached=kv is not None)
        cos_t, sin_t = self._rope_tables(kv.max_len if kv is not None else end, end, device)
        cos, sin = cos_t[pos], sin_t[pos]
        q_scale = llama4_q_scale(self.args, pos)

        h = self.tok_embeddings(tokens)
        for i, layer in enumerate(self.layers):
            layer_kv = (kv.k[i], kv.v[i]) if kv is not None else None
            h = layer(h, cos, sin, p, layer_kv, q_scale)
        if last_only:
            h = h[:, -1:]
        return self.output(self.norm(h)).float()

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
