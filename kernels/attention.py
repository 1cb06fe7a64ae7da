"""Attention kernels: causal flash prefill and split-KV grouped decode (Triton), reading the KV cache in place.

``attention(q, k_cache, v_cache, start_pos, rows=rows)`` is the entry point the model calls. Shapes:

* ``q``: ``[B, H, T, D]``, rotary already applied.
* ``k_cache``, ``v_cache``: ``[N, Hkv, S, D]``, the whole KV cache (any ``N`` rows), keys at
  absolute positions ``0..S-1``. Only the last dimension must be contiguous (a ``[N, S, Hkv, D]``
  cache viewed with ``.transpose(1, 2)`` works without a copy).
* ``rows``: ``LongTensor[B]``, the cache row of each query row (paged attention's block table with
  one block per row); ``None`` means rows ``0..B-1``. The kernels read the cache where it lies:
  no gathered copy of the live rows.
* ``start_pos``: ``LongTensor[B]`` on ``q``'s device, the absolute position of ``q[:, :, 0]``.
  Query ``t`` of row ``b`` attends keys ``j <= start_pos[b] + t``; ``start_pos[b] + T <= S``.
  No key at or past a row's own length ``start_pos[b] + T`` is ever loaded, so whatever a
  previous sequence left in a reused row (even NaN) cannot reach this one.

GQA is native: query head ``h`` reads KV head ``h // (H // Hkv)``; K/V are never repeated.
Softmax statistics and accumulators are float32; the output has ``q``'s dtype.

Dispatch: ``T == 1`` runs the split-KV decode kernel and its combine kernel, anything else the
causal flash prefill kernel (which also serves chunked prefill after cached tokens). Nothing is
read back to the host: every launch's grid comes from shapes and host integers, so a decode step
can be captured in a CUDA graph.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import Launch

# bf16 arithmetic is wrong in Triton's interpreter (loads, stores and casts are right): when
# interpreting, tiles are upcast to float32 right after loading. The GPU path keeps bf16/fp16
# operands for the tensor cores.
IS_INTERPRET: tl.constexpr = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")

LOG2E = 1.4426950408889634
SM90_MAX_SHARED = 232_448  # bytes of shared memory one block may use on sm_90 (H100/H200)
HEAD_DIMS = (16, 32, 64, 128, 256)


@triton.jit
def _load_tile(ptrs, mask):
    """Load a K/V tile (zeros where masked), upcast to float32 when interpreting."""
    x = tl.load(ptrs, mask=mask, other=0.0)
    if IS_INTERPRET:
        x = x.to(tl.float32)
    return x


# ---------------------------------------------------------------------------------------------
# Prefill: causal flash attention
# ---------------------------------------------------------------------------------------------


@triton.jit
def _prefill_inner(
    acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, q_pos, kv_lo, kv_hi, window, qk_scale,
    BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASK: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Online-softmax update of ``(acc, l_i, m_i)`` with the keys ``kv_lo..kv_hi-1``.

    Scores live in the log2 domain (``qk_scale`` includes log2(e)) so ``exp2`` is the only
    transcendental. ``MASK`` is on only for the tiles that straddle the diagonal or the window's
    lower edge. Masked scores get -1e6, not -inf: a row whose first tile is entirely masked then
    carries a finite maximum, and the next real maximum rescales its garbage by
    exp2(-1e6 - m) = 0. Keys at or past ``kv_hi`` are never loaded (zeros instead): a NaN left
    there by an earlier sequence would otherwise reach the output through ``0 * NaN``.
    """
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(kv_lo, kv_hi, BLOCK_N):
        kv_pos = start_n + offs_n
        loaded = kv_pos < kv_hi
        # -- scores: S = Q K^T for this key tile, log2 domain --
        k = _load_tile(k_base + kv_pos[:, None] * stride_ks + offs_d[None, :], loaded[:, None])
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        # -- mask: causal and window, on the boundary tiles only --
        if MASK:
            visible = (kv_pos[None, :] <= q_pos[:, None]) & (kv_pos[None, :] > q_pos[:, None] - window)
            s = tl.where(visible & loaded[None, :], s, -1.0e6)
        # -- online softmax: new running max, rescale factor alpha, row sums --
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        # -- accumulate: acc = alpha * acc + P V --
        v = _load_tile(v_base + kv_pos[:, None] * stride_vs + offs_d[None, :], loaded[:, None])
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _prefill_kernel(
    Q, K, V, O, start_pos, rows, qk_scale, T, window,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_ks,
    stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_ot,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Causal flash attention forward (FlashAttention-2 schedule), continuing after a KV cache.

    Grid ``(cdiv(T, BLOCK_M), H, B)``: one program owns ``BLOCK_M`` queries of one head of one
    row, at absolute positions ``p0 = start_pos[b] + m0 .. p0 + BLOCK_M - 1``, and reads cache row
    ``rows[b]``. It streams the keys of KV head ``h // GROUP`` in ``BLOCK_N`` tiles, keeping the
    running max ``m``, the running denominator ``l`` and the float32 accumulator ``acc`` (online
    softmax); the ``T x S`` score matrix never exists in memory. Three phases: tiles across the
    sliding window's lower edge (masked; none without a window), tiles every query of the block
    sees (no mask), tiles up to the last query's position across the diagonal (masked).
    ``window`` is the sliding window (keys ``p - window < j <= p``); no window is a huge one.

    Memory traffic per program: Q tile and O tile once (``2 * BLOCK_M * D`` elements) plus
    ``(p0 + BLOCK_M) * D`` elements of each of K and V (or the window's). Over the grid K/V are
    re-read once per query block and per query head of the group (from L2: the ``GROUP`` heads
    sharing a KV head run side by side). FLOPs: ``4 * D`` per visible (query, key) pair, i.e.
    ``2 * T^2 * D`` per head for a fresh causal prefill. Compute-bound for T >= ~512: the bound is
    the tensor-core peak (bf16 ~790 TFLOP/s measured dense on an H100; FlashAttention-2 reaches
    ~310-370, FlashAttention-3 ~650).
    """
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)  # b * stride_b overflows int32 on a 128k-token cache
    row = tl.load(rows + b)  # int64
    kvh = h // GROUP
    pos0 = tl.load(start_pos + b).to(tl.int32)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_pos = pos0 + offs_m
    q_rows = offs_m < T
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :]
    q = _load_tile(q_ptrs, q_rows[:, None])

    k_base = K + row * stride_kb + kvh * stride_kh
    v_base = V + row * stride_vb + kvh * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)

    first_q = pos0 + pid_m * BLOCK_M
    last_q = pos0 + tl.minimum(pid_m * BLOCK_M + BLOCK_M, T) - 1  # the row's own last key
    diag_lo = (first_q // BLOCK_N) * BLOCK_N
    lo = (tl.maximum(first_q - window + 1, 0) // BLOCK_N) * BLOCK_N
    all_see = tl.cdiv(tl.maximum(last_q - window + 1, 0), BLOCK_N) * BLOCK_N
    all_see = tl.minimum(tl.maximum(all_see, lo), diag_lo)
    # Phase 1: tiles across the window's lower edge (empty without a window): masked.
    acc, l_i, m_i = _prefill_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, q_pos, lo, all_see, window,
        qk_scale, BLOCK_N, HEAD_DIM, True, PRECISION,
    )  # fmt: skip
    # Phase 2: tiles every query of the block sees: no mask.
    acc, l_i, m_i = _prefill_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, q_pos, all_see, diag_lo, window,
        qk_scale, BLOCK_N, HEAD_DIM, False, PRECISION,
    )  # fmt: skip
    # Phase 3: tiles that straddle the diagonal, up to the last query of the block.
    acc, l_i, m_i = _prefill_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, q_pos, diag_lo, last_q + 1, window,
        qk_scale, BLOCK_N, HEAD_DIM, True, PRECISION,
    )  # fmt: skip

    out = acc / l_i[:, None]
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=q_rows[:, None])


NO_WINDOW = 2**30  # a window longer than any cache: plain causal attention


def precision(fp32: bool) -> str:
    """``tl.dot`` input precision. float32 gets ``tf32x3`` (three tf32 products: float32
    accuracy on the tensor cores; exact IEEE products spill badly); 16-bit operands ignore it."""
    return "tf32x3" if fp32 else "tf32"


def prefill_shared_bytes(block_m: int, block_n: int, stages: int, head_dim: int, itemsize: int) -> int:
    """Shared memory of a prefill tile configuration: ``stages`` buffers of K and V tiles and the
    Q tile. Exact for 16-bit operands on sm_90 (the compile report's 131072 B at 128x64, D 128,
    3 stages), an upper bound for float32."""
    return (stages * 2 * block_n + block_m) * head_dim * itemsize


def decode_shared_bytes(block_n: int, stages: int, head_dim: int, itemsize: int) -> int:
    """Upper bound of the decode split kernel's shared memory (``stages`` K and V tiles and the
    16-row query tile; the compile report's 71680 B for bf16, D 128, 64-key tiles, 3 stages)."""
    return (stages * 2 * block_n + 16) * head_dim * itemsize


def prefill_config(fp32: bool, head_dim: int = 128) -> tuple[int, int, int, int]:
    """Default ``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` of the prefill kernel.

    16-bit, head_dim <= 128: 128 x 64 tiles, 8 warps, 3 stages (131072 B of shared memory at 128);
    head_dim 256 would need 262144 B there (sm_90 allows 232448), so it takes 64 x 64 and 2 stages
    (163840 B). float32 (a test and reference path): 32 x 32, 4 warps, 2 stages, and 16 x 32 at 256.
    """
    if fp32:
        return (32, 32, 4, 2) if head_dim <= 128 else (16, 32, 4, 2)
    return (128, 64, 8, 3) if head_dim <= 128 else (64, 64, 8, 2)


def decode_config(fp32: bool, head_dim: int = 128) -> tuple[int, int, int]:
    """Default ``(BLOCK_N, num_warps, num_stages)`` of the decode split kernel: 64-key tiles,
    4 warps, 3 stages, fewer stages and keys where that would not fit sm_90's shared memory."""
    itemsize = 4 if fp32 else 2
    for block_n, stages in ((64, 3), (32, 3), (32, 2), (16, 2)):
        if decode_shared_bytes(block_n, stages, head_dim, itemsize) <= SM90_MAX_SHARED:
            return block_n, DECODE_NUM_WARPS, stages
    raise AssertionError("unreachable: head_dim is at most 256")


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start_pos: torch.Tensor, rows) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"expected q [B,H,T,D], k = v [N,Hkv,S,D]; got {q.shape}, {k.shape}, {v.shape}")
    B, H, _, D = q.shape
    if k.shape[3] != D or H % k.shape[1]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} do not match (GQA needs H % Hkv == 0)")
    if rows is None and k.shape[0] < B:
        raise ValueError(f"k has {k.shape[0]} rows for a batch of {B}; pass rows=")
    if rows is not None and (rows.shape != (B,) or rows.device != q.device):
        raise ValueError(f"rows must be a tensor [B={B}] on {q.device}, got {tuple(rows.shape)}")
    if D not in HEAD_DIMS:
        raise ValueError(f"head_dim must be one of {HEAD_DIMS}, got {D}")
    if start_pos.shape != (B,) or start_pos.device != q.device:
        raise ValueError(f"start_pos must be a tensor [B={B}] on {q.device}, got {start_pos.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")


def _check_tile(name: str, value: int) -> None:
    # tl.dot needs every dimension >= 16: smaller tiles run in the interpreter but do not compile.
    if value < 16 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= 16 (tl.dot's smallest tile), got {value}")


def _check_shared(what: str, need: int) -> None:
    if need > SM90_MAX_SHARED:
        raise ValueError(
            f"{what} needs {need} B of shared memory; sm_90 allows {SM90_MAX_SHARED} B per block: "
            "use smaller tiles or fewer stages"
        )


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _rows(rows: torch.Tensor | None, B: int, device) -> torch.Tensor:
    return torch.arange(B, device=device) if rows is None else rows


def _window(window: int | None) -> int:
    if window is not None and window < 1:
        raise ValueError(f"sliding_window must be >= 1 or None, got {window}")
    return NO_WINDOW if window is None else min(window, NO_WINDOW)


def prefill_launch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start_pos: torch.Tensor,
    scale: float | None = None, *, rows: torch.Tensor | None = None, window: int | None = None,
    block_m: int | None = None, block_n: int | None = None, num_warps: int | None = None,
    num_stages: int | None = None,
) -> tuple[torch.Tensor, list[Launch]]:  # fmt: skip
    """The output tensor and the launch of ``prefill_attention`` (checked, not run)."""
    _check(q, k, v, start_pos, rows)
    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    B, H, T, D = q.shape
    fp32 = q.dtype == torch.float32
    default_m, default_n, default_warps, default_stages = prefill_config(fp32, D)
    block_m = block_m or default_m
    block_n = block_n or default_n
    num_warps = num_warps or default_warps
    num_stages = num_stages or default_stages
    _check_tile("block_m", block_m)
    _check_tile("block_n", block_n)
    _check_shared(
        f"prefill {block_m}x{block_n}, head_dim {D}, {num_stages} stages",
        prefill_shared_bytes(block_m, block_n, num_stages, D, q.element_size()),
    )
    scale = D**-0.5 if scale is None else scale
    o = torch.empty_like(q)
    launch = Launch(
        _prefill_kernel,
        (triton.cdiv(T, block_m), H, B),
        (
            q, k, v, o, start_pos, _rows(rows, B, q.device), scale * LOG2E, T, _window(window),
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        ),
        dict(GROUP=H // k.shape[1], HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n,
             PRECISION=precision(fp32), num_warps=num_warps, num_stages=num_stages),
    )  # fmt: skip
    return o, [launch]


def prefill_attention(q, k, v, start_pos, scale=None, **kwargs) -> torch.Tensor:
    """Causal attention of ``T`` queries per row continuing after ``start_pos[b]`` cached keys.

    Keywords: ``rows``, ``window`` (sliding window), ``block_m``, ``block_n``, ``num_warps``,
    ``num_stages`` (see ``prefill_launch``).
    """
    o, launches = prefill_launch(q, k, v, start_pos, scale, **kwargs)
    for launch in launches:
        launch()
    return o


# ---------------------------------------------------------------------------------------------
# Decode: split-KV, the query heads of a GQA group in the rows of one tl.dot
# ---------------------------------------------------------------------------------------------


@triton.jit
def _decode_split_kernel(
    Q, K, V, O_part, LSE_part, start_pos, rows, qk_scale, min_split, max_splits, window,
    stride_qb, stride_qh, stride_kb, stride_kh, stride_ks, stride_vb, stride_vh, stride_vs,
    stride_pb, stride_ph, stride_ps, stride_lb, stride_lh,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """One decode query per row: partial attention over one split of the row's keys.

    Grid ``(num_splits, Hkv, B)``. Row ``b`` attends keys ``lo..len-1`` of cache row ``rows[b]``
    (``len = start_pos[b] + 1``, ``lo = max(0, len - window)``), cut into splits of
    ``split_len = max(min_split, cdiv(len - lo, max_splits))`` keys rounded up to ``BLOCK_N``:
    a function of the row's own length only, so a row's result is bitwise the same alone or in
    any batch (batch invariance); splits past the row's last key are empty. Program ``(s, g, b)``
    reads its split of KV head ``g`` once and serves all ``GROUP`` query heads that share it:
    their queries are the rows of a ``[GROUP_PAD, D]`` tile (padded to 16, the smallest
    ``tl.dot`` M), so scores are one ``[GROUP_PAD, BLOCK_N]`` dot per key tile and the K/V bytes
    are read once for the whole group (vLLM's grouped decode design). It writes the split's
    normalised output ``o_s`` (float32) and its log2-sum-exp ``lse_s``; an empty split writes
    ``lse_s = -inf`` and ``o_s = 0``. ``_decode_combine_kernel`` merges the splits.

    Memory traffic: ``2 * len_b * D`` elements of K/V per (row, KV head): the KV cache in use,
    once. Plus ``GROUP * (D + 1)`` float32 per split written and read back by the combine,
    negligible while ``split_len >> GROUP`` (hence ``min_split``). About 4 FLOP per KV byte in
    bf16 with GROUP = 4: memory-bound. Bound: ``bytes(K, V) / copy bandwidth`` (~3.0 TB/s on an
    H100 SXM), reached only when splits x Hkv x B fill every SM (see ``decode_splits``).
    """
    split = tl.program_id(0)
    kvh = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)  # b * stride_b overflows int32 on a 128k-token cache
    row = tl.load(rows + b)  # int64
    length = tl.load(start_pos + b).to(tl.int32) + 1
    first = tl.maximum(length - window, 0)
    split_len = tl.maximum(tl.cdiv(length - first, max_splits), min_split)
    split_len = tl.cdiv(split_len, BLOCK_N) * BLOCK_N
    kv_lo = first + split * split_len
    kv_hi = tl.minimum(kv_lo + split_len, length)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    heads = kvh * GROUP + offs_g
    head_ok = offs_g < GROUP
    q = _load_tile(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], head_ok[:, None])

    k_base = K + row * stride_kb + kvh * stride_kh
    v_base = V + row * stride_vb + kvh * stride_vh
    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    # Every tile of this loop holds at least one key < kv_hi, so m_new is finite and no NaN
    # can appear even though masked scores are -inf. Keys >= kv_hi are never loaded.
    for start_n in range(kv_lo, kv_hi, BLOCK_N):
        kv_pos = start_n + offs_n
        valid = kv_pos < kv_hi
        # -- scores: the whole GQA group against this key tile, keys >= kv_hi at -inf --
        k = _load_tile(k_base + kv_pos[:, None] * stride_ks + offs_d[None, :], valid[:, None])
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        # -- online softmax: new running max, rescale factor alpha, row sums --
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        # -- accumulate: acc = alpha * acc + P V --
        v = _load_tile(v_base + kv_pos[:, None] * stride_vs + offs_d[None, :], valid[:, None])
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    # -- epilogue: normalise, store the split's output and its log2-sum-exp --
    nonempty = l_i > 0
    o = acc / tl.where(nonempty, l_i, 1.0)[:, None]
    lse = tl.where(nonempty, m_i + tl.math.log2(tl.where(nonempty, l_i, 1.0)), float("-inf"))
    p_ptrs = O_part + b * stride_pb + heads[:, None] * stride_ph + split * stride_ps
    tl.store(p_ptrs + offs_d[None, :], o, mask=head_ok[:, None])
    tl.store(LSE_part + b * stride_lb + heads * stride_lh + split, lse, mask=head_ok)


@triton.jit
def _decode_combine_kernel(
    O_part, LSE_part, O, num_splits,
    stride_pb, stride_ph, stride_ps, stride_lb, stride_lh, stride_ob, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    """Merge the per-split outputs of one (row, query head): ``o = sum_s w_s o_s / sum_s w_s``.

    Grid ``(H, B)``. ``w_s = exp2(lse_s - max lse)``, accumulated online over chunks of
    ``BLOCK_S`` splits. Split 0 always holds the row's first key, so the running max is finite
    after the first chunk, and empty splits (``lse = -inf``, ``o = 0``) change nothing, bit for
    bit: a chunk of them multiplies by ``exp2(0) = 1`` and adds 0. With ``BLOCK_S`` fixed the
    result is thus independent of how many splits the batch's longest row needed. Memory traffic:
    ``num_splits * (D + 1)`` float32 read and ``D`` elements written per (row, head).
    """
    h = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, HEAD_DIM)
    m = float("-inf")
    l_sum = 0.0
    acc = tl.zeros([HEAD_DIM], tl.float32)
    for s0 in range(0, num_splits, BLOCK_S):
        splits = s0 + offs_s
        ok = splits < num_splits
        # -- load a chunk of BLOCK_S splits' (lse, o) --
        lse = tl.load(LSE_part + b * stride_lb + h * stride_lh + splits, mask=ok, other=float("-inf"))
        o_ptrs = O_part + b * stride_pb + h * stride_ph + splits[:, None] * stride_ps + offs_d[None, :]
        o = tl.load(o_ptrs, mask=ok[:, None], other=0.0)
        # -- rescale the running sums to the new max, add the chunk's weighted outputs --
        m_new = tl.maximum(m, tl.max(lse, 0))
        alpha = tl.math.exp2(m - m_new)
        w = tl.math.exp2(lse - m_new)
        acc = acc * alpha + tl.sum(w[:, None] * o, 0)
        l_sum = l_sum * alpha + tl.sum(w, 0)
        m = m_new
    # -- epilogue: normalise and store --
    out = acc / l_sum
    tl.store(O + b * stride_ob + h * stride_oh + offs_d, out.to(O.dtype.element_ty))


DECODE_BLOCK_N = 64
DECODE_NUM_WARPS = 4
DECODE_NUM_STAGES = 3
COMBINE_BLOCK_S = 16  # fixed, not sized to the launch: the combine's sums stay batch-invariant
# Decode split programs one SM holds at once (bf16, D 128, the defaults): shared memory allows
# 3 (71680 B each of sm_90's 233472 B per SM); registers would allow 5 (88 x 128 threads of
# 65536). tests/test_kernels_compile.py checks this against the compiled kernel.
DECODE_PROGRAMS_PER_SM = 3
# Keys per split at least: below this the partial outputs (GROUP x (D + 1) float32 per split)
# stop being negligible next to the split's K/V (256 keys x D x 2 x 2 B = 64x the partials at
# GROUP 4), and the combine's work grows for nothing.
MIN_SPLIT_LEN = 256


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1  # interpreter: programs run one after another, fewer is faster


def decode_max_splits(Hkv: int, num_sms: int) -> int:
    """Splits per row: a single row alone fills every SM with ``DECODE_PROGRAMS_PER_SM`` programs.

    Independent of the batch (a batch only adds programs), so a row is cut the same way whatever
    shares its step: batch-1 Nemo (8 KV heads) on a 132-SM H100: 50 splits, 400 programs.
    """
    return max(1, triton.cdiv(DECODE_PROGRAMS_PER_SM * num_sms, Hkv))


def decode_split_len(
    length: int, max_splits: int, min_split: int = MIN_SPLIT_LEN, block_n: int = DECODE_BLOCK_N
) -> int:
    """Keys per split of a row of ``length`` keys (the kernel's own rule, for tests and reports)."""
    split = max(triton.cdiv(length, max_splits), min_split)
    return triton.cdiv(split, block_n) * block_n


def decode_launch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start_pos: torch.Tensor,
    scale: float | None = None, *, rows: torch.Tensor | None = None, window: int | None = None,
    max_len: int | None = None, split_len: int | None = None, min_split: int = MIN_SPLIT_LEN,
    max_splits: int | None = None, block_n: int | None = None, num_warps: int | None = None,
    num_stages: int | None = None,
) -> tuple[torch.Tensor, list[Launch]]:  # fmt: skip
    """The output tensor and the two launches of ``decode_attention`` (checked, not run).

    ``max_len``: a host-side bound on every row's ``start_pos + 1`` (default: the cache length
    ``S``); it sizes the grid, never the splits. ``split_len`` fixes every row's split length
    (shorthand for ``min_split=split_len`` and as many splits as that needs).
    """
    _check(q, k, v, start_pos, rows)
    if q.shape[2] != 1:
        raise ValueError(f"decode_attention takes one query per row, got T = {q.shape[2]}")
    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    B, H, _, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    fp32 = q.dtype == torch.float32
    default_n, default_warps, default_stages = decode_config(fp32, D)
    block_n = block_n or default_n
    num_warps = num_warps or default_warps
    num_stages = num_stages or default_stages
    _check_tile("block_n", block_n)
    _check_shared(
        f"decode {block_n}-key tiles, head_dim {D}, {num_stages} stages",
        decode_shared_bytes(block_n, num_stages, D, q.element_size()),
    )
    max_len = min(S if max_len is None else max_len, S)
    span = max_len if window is None else min(max_len, window)  # keys one row may attend
    if split_len is not None:
        min_split, max_splits = split_len, triton.cdiv(span, split_len)
    max_splits = max_splits or decode_max_splits(Hkv, _sm_count(q.device))
    if min_split < 1 or max_splits < 1:
        raise ValueError(f"min_split and max_splits must be >= 1, got {min_split}, {max_splits}")
    num_splits = max(1, min(max_splits, triton.cdiv(span, min_split)))
    scale = D**-0.5 if scale is None else scale
    o_part = torch.empty((B, H, num_splits, D), device=q.device, dtype=torch.float32)
    lse_part = torch.empty((B, H, num_splits), device=q.device, dtype=torch.float32)
    o = torch.empty_like(q)
    split = Launch(
        _decode_split_kernel,
        (num_splits, Hkv, B),
        (
            q, k, v, o_part, lse_part, start_pos, _rows(rows, B, q.device), scale * LOG2E,
            min_split, max_splits, _window(window),
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
            o_part.stride(0), o_part.stride(1), o_part.stride(2), lse_part.stride(0), lse_part.stride(1),
        ),
        dict(GROUP=H // Hkv, GROUP_PAD=max(16, triton.next_power_of_2(H // Hkv)), HEAD_DIM=D,
             BLOCK_N=block_n, PRECISION=precision(fp32), num_warps=num_warps, num_stages=num_stages),
    )  # fmt: skip
    combine = Launch(
        _decode_combine_kernel,
        (H, B),
        (
            o_part, lse_part, o, num_splits,
            o_part.stride(0), o_part.stride(1), o_part.stride(2), lse_part.stride(0), lse_part.stride(1),
            o.stride(0), o.stride(1),
        ),
        dict(HEAD_DIM=D, BLOCK_S=COMBINE_BLOCK_S, num_warps=1),
    )  # fmt: skip
    return o, [split, combine]


def decode_attention(q, k, v, start_pos, scale=None, **kwargs) -> torch.Tensor:
    """One query per row (``T == 1``) against ``start_pos[b] + 1`` cached keys (split-KV).

    Keywords: ``rows``, ``window``, ``max_len``, ``split_len``, ``min_split``, ``max_splits``,
    ``block_n``, ``num_warps``, ``num_stages`` (see ``decode_launch``).
    """
    o, launches = decode_launch(q, k, v, start_pos, scale, **kwargs)
    for launch in launches:
        launch()
    return o


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    start_pos: torch.Tensor,
    scale: float | None = None,
    *,
    rows: torch.Tensor | None = None,
    window: int | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """Causal GQA attention after ``start_pos`` cached tokens: decode kernel if T == 1, else prefill.

    ``k``/``v`` are the whole cache ``[N, Hkv, S, D]`` and ``rows`` (``[B]``, default 0..B-1) the
    cache row of each query row; ``window`` a sliding window; ``max_len`` a host-side bound on
    ``start_pos + T`` (sizes the decode grid; default ``S``).
    """
    if q.shape[2] == 1:
        return decode_attention(q, k, v, start_pos, scale, rows=rows, window=window, max_len=max_len)
    return prefill_attention(q, k, v, start_pos, scale, rows=rows, window=window)


__all__ = [
    "attention",
    "decode_attention",
    "decode_config",
    "decode_launch",
    "decode_max_splits",
    "decode_split_len",
    "precision",
    "prefill_attention",
    "prefill_config",
    "prefill_launch",
]
