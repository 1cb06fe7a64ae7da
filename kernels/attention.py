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

This module holds the kernels and their launchers (``prefill_launch``, ``decode_launch``: the
launch built and checked, not run). How a launch is sized and checked -- tiles, stages, the decode
split rule, sm_90's shared memory -- is ``attention_config.py``, re-exported here.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl

from .attention_config import (
    COMBINE_BLOCK_S,
    DECODE_PROGRAMS_PER_SM,
    MIN_SPLIT_LEN,
    SM90_MAX_SHARED,
    check_inputs,
    decode_config,
    decode_max_splits,
    decode_shared_bytes,
    decode_split_len,
    decode_splits,
    decode_tiles,
    kernel_window,
    last_dim_contiguous,
    precision,
    prefill_config,
    prefill_shared_bytes,
    prefill_tiles,
    row_index,
    sm_count,
)
from .launch import Launch

# bf16 arithmetic is wrong in Triton's interpreter (loads, stores and casts are right): when
# interpreting, tiles are upcast to float32 right after loading. The GPU path keeps bf16/fp16
# operands for the tensor cores.
IS_INTERPRET: tl.constexpr = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")

LOG2E = 1.4426950408889634


@triton.jit
def _load_tile(ptrs, mask):
    """Load a K/V tile (zeros where masked), upcast to float32 when interpreting."""
    x = tl.load(ptrs, mask=mask, other=0.0)
    if IS_INTERPRET:
        x = x.to(tl.float32)
    return x


@triton.jit
def _online_softmax_step(acc, l_i, m_i, s, v_ptrs, v_mask, PRECISION: tl.constexpr):
    """Fold one tile of scores ``s`` [M, BLOCK_N] (log2 domain) and its V tile into the running
    output ``acc`` [M, D], row sums ``l_i`` and row maxima ``m_i`` (the online softmax of
    Milakov & Gimelshein 2018, FlashAttention's inner step): new maximum, rescale factor
    ``alpha = exp2(m_old - m_new)``, ``l = alpha l + rowsum(P)``, ``acc = alpha acc + P V``.
    The V tile is loaded after the softmax, so it is not live while the exponentials run."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    v = _load_tile(v_ptrs, v_mask)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return acc, l_i, m_new


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
        # -- step 1: load the K tile, scores S = Q K^T [BLOCK_M, BLOCK_N] in the log2 domain --
        k = _load_tile(k_base + kv_pos[:, None] * stride_ks + offs_d[None, :], loaded[:, None])
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        # -- step 2: mask causal and window, on the boundary tiles only --
        if MASK:
            visible = (kv_pos[None, :] <= q_pos[:, None]) & (kv_pos[None, :] > q_pos[:, None] - window)
            s = tl.where(visible & loaded[None, :], s, -1.0e6)
        # -- step 3: online softmax, then load the V tile and accumulate P V --
        v_ptrs = v_base + kv_pos[:, None] * stride_vs + offs_d[None, :]
        acc, l_i, m_i = _online_softmax_step(acc, l_i, m_i, s, v_ptrs, loaded[:, None], PRECISION)
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

    # -- prologue: load the Q tile [BLOCK_M, D] once; zero the running statistics --
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

    # -- main loop: the key tiles in three ranges, masked only where they must be --
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

    # -- epilogue: normalise by the row sums, store the O tile --
    out = acc / l_i[:, None]
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=q_rows[:, None])


def prefill_launch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start_pos: torch.Tensor,
    scale: float | None = None, *, rows: torch.Tensor | None = None, window: int | None = None,
    block_m: int | None = None, block_n: int | None = None, num_warps: int | None = None,
    num_stages: int | None = None,
) -> tuple[torch.Tensor, list[Launch]]:  # fmt: skip
    """The output tensor and the launch of ``prefill_attention`` (checked, not run)."""
    check_inputs(q, k, v, start_pos, rows)
    q, k, v = (last_dim_contiguous(x) for x in (q, k, v))
    B, H, T, D = q.shape  # [B, 32, T, 128] for Nemo; k, v [N, 8, S, 128]
    fp32 = q.dtype == torch.float32
    block_m, block_n, num_warps, num_stages = prefill_tiles(
        D, q.element_size(), block_m=block_m, block_n=block_n, num_warps=num_warps, num_stages=num_stages
    )
    scale = D**-0.5 if scale is None else scale
    o = torch.empty_like(q)
    launch = Launch(
        _prefill_kernel,
        (triton.cdiv(T, block_m), H, B),
        (
            q, k, v, o, start_pos, row_index(rows, B, q.device), scale * LOG2E, T, kernel_window(window),
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        ),
        dict(GROUP=H // k.shape[1], HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n,
             PRECISION=precision(fp32), num_warps=num_warps, num_stages=num_stages),
    )  # fmt: skip
    return o, [launch]


def prefill_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start_pos: torch.Tensor,
    scale: float | None = None, **kwargs: Any,
) -> torch.Tensor:  # fmt: skip
    """Causal attention of ``T`` queries per row continuing after ``start_pos[b]`` cached keys.

    Keywords: ``rows``, ``window`` (sliding window), ``block_m``, ``block_n``, ``num_warps``,
    ``num_stages`` (see ``prefill_launch``).
    """
    return _run(*prefill_launch(q, k, v, start_pos, scale, **kwargs))


def _run(o: torch.Tensor, launches: list[Launch]) -> torch.Tensor:
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
    H100 SXM), reached only when splits x Hkv x B fill every SM (see ``attention_config.decode_max_splits``).
    """
    split = tl.program_id(0)
    kvh = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)  # b * stride_b overflows int32 on a 128k-token cache
    row = tl.load(rows + b)  # int64
    # -- prologue: this split's keys [kv_lo, kv_hi), the group's queries [GROUP_PAD, D] --
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
    # -- main loop: the split's key tiles. Every tile holds at least one key < kv_hi, so m_new is
    # finite and no NaN can appear even though masked scores are -inf. Keys >= kv_hi are never
    # loaded.
    for start_n in range(kv_lo, kv_hi, BLOCK_N):
        kv_pos = start_n + offs_n
        valid = kv_pos < kv_hi
        # -- step 1: load the K tile, scores of the whole GQA group [GROUP_PAD, BLOCK_N] --
        k = _load_tile(k_base + kv_pos[:, None] * stride_ks + offs_d[None, :], valid[:, None])
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        # -- step 2: mask the keys >= kv_hi (-inf) --
        s = tl.where(valid[None, :], s, float("-inf"))
        # -- step 3: online softmax, then load the V tile and accumulate P V --
        v_ptrs = v_base + kv_pos[:, None] * stride_vs + offs_d[None, :]
        acc, l_i, m_i = _online_softmax_step(acc, l_i, m_i, s, v_ptrs, valid[:, None], PRECISION)

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
    check_inputs(q, k, v, start_pos, rows)
    if q.shape[2] != 1:
        raise ValueError(f"decode_attention takes one query per row, got T = {q.shape[2]}")
    q, k, v = (last_dim_contiguous(x) for x in (q, k, v))
    B, H, _, D = q.shape  # [B, 32, 1, 128] for Nemo
    Hkv, S = k.shape[1], k.shape[2]  # [N, 8, S, 128] for Nemo
    fp32 = q.dtype == torch.float32
    block_n, num_warps, num_stages = decode_tiles(
        D, q.element_size(), block_n=block_n, num_warps=num_warps, num_stages=num_stages
    )
    min_split, max_splits, num_splits = decode_splits(
        S, Hkv, q.device, max_len=max_len, window=window, split_len=split_len,
        min_split=min_split, max_splits=max_splits,
    )  # fmt: skip
    scale = D**-0.5 if scale is None else scale
    o_part = torch.empty((B, H, num_splits, D), device=q.device, dtype=torch.float32)
    lse_part = torch.empty((B, H, num_splits), device=q.device, dtype=torch.float32)
    o = torch.empty_like(q)
    split = Launch(
        _decode_split_kernel,
        (num_splits, Hkv, B),
        (
            q, k, v, o_part, lse_part, start_pos, row_index(rows, B, q.device), scale * LOG2E,
            min_split, max_splits, kernel_window(window),
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


def decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start_pos: torch.Tensor,
    scale: float | None = None, **kwargs: Any,
) -> torch.Tensor:  # fmt: skip
    """One query per row (``T == 1``) against ``start_pos[b] + 1`` cached keys (split-KV).

    Keywords: ``rows``, ``window``, ``max_len``, ``split_len``, ``min_split``, ``max_splits``,
    ``block_n``, ``num_warps``, ``num_stages`` (see ``decode_launch``).
    """
    return _run(*decode_launch(q, k, v, start_pos, scale, **kwargs))


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
    "DECODE_PROGRAMS_PER_SM",
    "MIN_SPLIT_LEN",
    "SM90_MAX_SHARED",
    "attention",
    "decode_attention",
    "decode_config",
    "decode_launch",
    "decode_max_splits",
    "decode_shared_bytes",
    "decode_split_len",
    "precision",
    "prefill_attention",
    "prefill_config",
    "prefill_launch",
    "prefill_shared_bytes",
    "sm_count",
]
