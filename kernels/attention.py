"""Attention kernels: causal flash prefill and split-KV grouped decode (Triton).

``attention(q, k, v, start_pos)`` is the entry point the model calls. Shapes:

* ``q``: ``[B, H, T, D]``, rotary already applied.
* ``k``, ``v``: ``[B, Hkv, S, D]``, the KV-cache slice for these rows, keys at absolute positions
  ``0..S-1``. Only the last dimension must be contiguous (a ``[B, S, Hkv, D]`` cache viewed with
  ``.transpose(1, 2)`` works without a copy). ``S`` may exceed what is valid: causality ignores the
  rest. Keep ``S`` close to the longest row, though: decode splits ``S`` into chunks.
* ``start_pos``: ``LongTensor[B]`` on ``q``'s device, the absolute position of ``q[:, :, 0]``.
  Query ``t`` of row ``b`` attends keys ``j <= start_pos[b] + t``; ``start_pos[b] + T <= S``.

GQA is native: query head ``h`` reads KV head ``h // (H // Hkv)``; K/V are never repeated.
Softmax statistics and accumulators are float32; the output has ``q``'s dtype.

Dispatch: ``T == 1`` runs the split-KV decode kernel and its combine kernel, anything else the
causal flash prefill kernel (which also serves chunked prefill after cached tokens).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

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


# ---------------------------------------------------------------------------------------------
# Prefill: causal flash attention
# ---------------------------------------------------------------------------------------------


@triton.jit
def _prefill_inner(
    acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, q_pos, kv_lo, kv_hi, S, qk_scale,
    BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, CAUSAL_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Online-softmax update of ``(acc, l_i, m_i)`` with the keys ``kv_lo..kv_hi-1``.

    Scores live in the log2 domain (``qk_scale`` includes log2(e)) so ``exp2`` is the only
    transcendental. ``CAUSAL_MASK`` is on only for the blocks that straddle the diagonal.
    Masked scores get -1e6, not -inf: a row whose first block is entirely masked then carries a
    finite maximum, and the next real maximum rescales its garbage by exp2(-1e6 - m) = 0.
    """
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(kv_lo, kv_hi, BLOCK_N):
        kv_pos = start_n + offs_n
        in_cache = kv_pos < S
        k = _load_tile(k_base + kv_pos[:, None] * stride_ks + offs_d[None, :], in_cache[:, None])
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        if CAUSAL_MASK:
            visible = (kv_pos[None, :] <= q_pos[:, None]) & in_cache[None, :]
            s = tl.where(visible, s, -1.0e6)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(v_base + kv_pos[:, None] * stride_vs + offs_d[None, :], in_cache[:, None])
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _prefill_kernel(
    Q, K, V, O, start_pos, qk_scale, T, S,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_ks,
    stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_ot,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Causal flash attention forward (FlashAttention-2 schedule), continuing after a KV cache.

    Grid ``(cdiv(T, BLOCK_M), H, B)``: one program owns ``BLOCK_M`` queries of one head of one
    row, at absolute positions ``p0 = start_pos[b] + m0 .. p0 + BLOCK_M - 1``. It streams the
    keys of KV head ``h // GROUP`` in ``BLOCK_N`` tiles, keeping the running max ``m``, the
    running denominator ``l`` and the float32 accumulator ``acc`` (online softmax); the ``T x S``
    score matrix never exists in memory. Two phases: keys ``< p0`` (rounded down to a tile) are
    visible to every query of the block and need no mask; the tiles up to the last query's
    position straddle the diagonal and are masked.

    Memory traffic per program: Q tile and O tile once (``2 * BLOCK_M * D`` elements) plus
    ``(p0 + BLOCK_M) * D`` elements of each of K and V. Over the grid K/V are re-read once per
    query block and per query head of the group (from L2: the ``GROUP`` heads sharing a KV head
    run side by side). FLOPs: ``4 * D`` per visible (query, key) pair, i.e. ``2 * T^2 * D`` per
    head for a fresh causal prefill. Compute-bound for T >= ~512: the bound is the tensor-core
    peak (bf16 ~790 TFLOP/s measured dense on an H100; FlashAttention-2 reaches ~310-370,
    FlashAttention-3 ~650).
    """
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)  # b * stride_b overflows int32 on a 128k-token cache
    kvh = h // GROUP
    pos0 = tl.load(start_pos + b).to(tl.int32)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_pos = pos0 + offs_m
    q_rows = offs_m < T
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :]
    q = _load_tile(q_ptrs, q_rows[:, None])

    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)

    # Phase 1: tiles entirely before the block's first query: no mask.
    first_q = pos0 + pid_m * BLOCK_M
    diag_lo = (tl.minimum(first_q, S) // BLOCK_N) * BLOCK_N
    acc, l_i, m_i = _prefill_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, q_pos, 0, diag_lo, S, qk_scale,
        BLOCK_N, HEAD_DIM, False, PRECISION,
    )  # fmt: skip
    # Phase 2: tiles that straddle the diagonal, up to the last query of the block.
    last_q = pos0 + tl.minimum(pid_m * BLOCK_M + BLOCK_M, T) - 1
    diag_hi = tl.minimum(last_q + 1, S)
    acc, l_i, m_i = _prefill_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_vs, q_pos, diag_lo, diag_hi, S,
        qk_scale, BLOCK_N, HEAD_DIM, True, PRECISION,
    )  # fmt: skip

    out = acc / l_i[:, None]
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=q_rows[:, None])


def precision(fp32: bool) -> str:
    """``tl.dot`` input precision. float32 gets ``tf32x3`` (three tf32 products: float32
    accuracy on the tensor cores; exact IEEE products spill badly); 16-bit operands ignore it."""
    return "tf32x3" if fp32 else "tf32"


def prefill_config(fp32: bool) -> tuple[int, int, int, int]:
    """Default ``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` of the prefill kernel (head_dim 128)."""
    return (32, 32, 4, 2) if fp32 else (128, 64, 8, 3)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start_pos: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"expected q [B,H,T,D], k = v [B,Hkv,S,D]; got {q.shape}, {k.shape}, {v.shape}")
    B, H, _, D = q.shape
    if k.shape[0] != B or k.shape[3] != D or H % k.shape[1]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} do not match (GQA needs H % Hkv == 0)")
    if D < 16 or D & (D - 1):
        raise ValueError(f"head_dim must be a power of two >= 16, got {D}")
    if start_pos.shape != (B,) or start_pos.device != q.device:
        raise ValueError(f"start_pos must be a tensor [B={B}] on {q.device}, got {start_pos.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    start_pos: torch.Tensor,
    scale: float | None = None,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """Causal attention of ``T`` queries per row continuing after ``start_pos[b]`` cached keys."""
    _check(q, k, v, start_pos)
    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    B, H, T, D = q.shape
    S = k.shape[2]
    fp32 = q.dtype == torch.float32
    default_m, default_n, default_warps, default_stages = prefill_config(fp32)
    block_m = block_m or default_m
    block_n = block_n or default_n
    num_warps = num_warps or default_warps
    num_stages = num_stages or default_stages
    scale = D**-0.5 if scale is None else scale
    o = torch.empty_like(q)
    grid = (triton.cdiv(T, block_m), H, B)
    _prefill_kernel[grid](
        q, k, v, o, start_pos, scale * LOG2E, T, S,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        GROUP=H // k.shape[1], HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n,
        PRECISION=precision(q.dtype == torch.float32), num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return o


# ---------------------------------------------------------------------------------------------
# Decode: split-KV, the query heads of a GQA group in the rows of one tl.dot
# ---------------------------------------------------------------------------------------------


@triton.jit
def _decode_split_kernel(
    Q, K, V, O_part, LSE_part, start_pos, qk_scale, S, split_len,
    stride_qb, stride_qh, stride_kb, stride_kh, stride_ks, stride_vb, stride_vh, stride_vs,
    stride_pb, stride_ph, stride_ps, stride_lb, stride_lh,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """One decode query per row: partial attention over one split of the KV sequence.

    Grid ``(num_splits, Hkv, B)``. Program ``(s, g, b)`` reads keys ``s * split_len ..
    min((s + 1) * split_len, start_pos[b] + 1) - 1`` of KV head ``g`` once, and serves all
    ``GROUP`` query heads that share it: their queries are the rows of a ``[GROUP_PAD, D]`` tile
    (padded to 16, the smallest ``tl.dot`` M), so scores are one ``[GROUP_PAD, BLOCK_N]`` dot per
    key tile and the K/V bytes are read once for the whole group (vLLM's grouped decode design).
    It writes the split's normalised output ``o_s`` (float32) and its log2-sum-exp ``lse_s``;
    an empty split (past this row's length) writes ``lse_s = -inf`` and ``o_s = 0``.
    ``_decode_combine_kernel`` merges the splits.

    Memory traffic: ``2 * len_b * D`` elements of K/V per (row, KV head): all of the KV cache in
    use, once. Plus ``GROUP * (D + 1)`` float32 per split written and read back by the combine,
    negligible while ``split_len >> GROUP``. About 4 FLOP per KV byte in bf16 with GROUP = 4:
    memory-bound. Bound: ``bytes(K, V) / copy bandwidth`` (~3.0 TB/s on an H100 SXM), reached
    only when splits x Hkv x B fill every SM (the launcher aims at ~4 programs per SM).
    """
    split = tl.program_id(0)
    kvh = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)  # b * stride_b overflows int32 on a 128k-token cache
    length = tl.minimum(tl.load(start_pos + b).to(tl.int32) + 1, S)
    kv_lo = split * split_len
    kv_hi = tl.minimum(kv_lo + split_len, length)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    heads = kvh * GROUP + offs_g
    head_ok = offs_g < GROUP
    q = _load_tile(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], head_ok[:, None])

    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    # Every tile of this loop holds at least one key < kv_hi, so m_new is finite and no NaN
    # can appear even though masked scores are -inf.
    for start_n in range(kv_lo, kv_hi, BLOCK_N):
        kv_pos = start_n + offs_n
        valid = kv_pos < kv_hi
        k = _load_tile(k_base + kv_pos[:, None] * stride_ks + offs_d[None, :], valid[:, None])
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(v_base + kv_pos[:, None] * stride_vs + offs_d[None, :], valid[:, None])
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

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
    ``BLOCK_S`` splits. Split 0 always holds key 0, so the running max is finite after the first
    chunk and empty splits (``lse = -inf``) weigh 0. Memory traffic: ``num_splits * (D + 1)``
    float32 read and ``D`` elements written per (row, head): microseconds, launch-bound.
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
        lse = tl.load(LSE_part + b * stride_lb + h * stride_lh + splits, mask=ok, other=float("-inf"))
        o_ptrs = O_part + b * stride_pb + h * stride_ph + splits[:, None] * stride_ps + offs_d[None, :]
        o = tl.load(o_ptrs, mask=ok[:, None], other=0.0)
        m_new = tl.maximum(m, tl.max(lse, 0))
        alpha = tl.math.exp2(m - m_new)
        w = tl.math.exp2(lse - m_new)
        acc = acc * alpha + tl.sum(w[:, None] * o, 0)
        l_sum = l_sum * alpha + tl.sum(w, 0)
        m = m_new
    out = acc / l_sum
    tl.store(O + b * stride_ob + h * stride_oh + offs_d, out.to(O.dtype.element_ty))


DECODE_BLOCK_N = 64
DECODE_NUM_WARPS = 4
DECODE_NUM_STAGES = 3


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1  # interpreter: programs run one after another, fewer is faster


def decode_split_len(B: int, Hkv: int, S: int, block_n: int, num_sms: int) -> int:
    """Keys per split: enough splits that ``splits * Hkv * B`` is ~4 programs per SM.

    Computed from ``S`` (not from ``start_pos``) so the launch needs no device-to-host sync.
    """
    splits = max(1, triton.cdiv(4 * num_sms, B * Hkv))
    return triton.cdiv(triton.cdiv(S, splits), block_n) * block_n


def decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    start_pos: torch.Tensor,
    scale: float | None = None,
    *,
    split_len: int | None = None,
    block_n: int = DECODE_BLOCK_N,
    num_warps: int = DECODE_NUM_WARPS,
    num_stages: int = DECODE_NUM_STAGES,
) -> torch.Tensor:
    """One query per row (``T == 1``) against ``start_pos[b] + 1`` cached keys (split-KV)."""
    _check(q, k, v, start_pos)
    if q.shape[2] != 1:
        raise ValueError(f"decode_attention takes one query per row, got T = {q.shape[2]}")
    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    B, H, _, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    group = H // Hkv
    split_len = split_len or decode_split_len(B, Hkv, S, block_n, _sm_count(q.device))
    if split_len % block_n:
        raise ValueError(f"split_len ({split_len}) must be a multiple of block_n ({block_n})")
    num_splits = triton.cdiv(S, split_len)
    scale = D**-0.5 if scale is None else scale
    o_part = torch.empty((B, H, num_splits, D), device=q.device, dtype=torch.float32)
    lse_part = torch.empty((B, H, num_splits), device=q.device, dtype=torch.float32)
    _decode_split_kernel[(num_splits, Hkv, B)](
        q, k, v, o_part, lse_part, start_pos, scale * LOG2E, S, split_len,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        o_part.stride(0), o_part.stride(1), o_part.stride(2), lse_part.stride(0), lse_part.stride(1),
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=D, BLOCK_N=block_n,
        PRECISION=precision(q.dtype == torch.float32), num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    o = torch.empty_like(q)
    _decode_combine_kernel[(H, B)](
        o_part, lse_part, o, num_splits,
        o_part.stride(0), o_part.stride(1), o_part.stride(2), lse_part.stride(0), lse_part.stride(1),
        o.stride(0), o.stride(1),
        HEAD_DIM=D, BLOCK_S=min(16, triton.next_power_of_2(num_splits)), num_warps=1,
    )  # fmt: skip
    return o


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    start_pos: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal GQA attention after ``start_pos`` cached tokens: decode kernel if T == 1, else prefill."""
    if q.shape[2] == 1:
        return decode_attention(q, k, v, start_pos, scale)
    return prefill_attention(q, k, v, start_pos, scale)


__all__ = [
    "attention",
    "decode_attention",
    "decode_split_len",
    "precision",
    "prefill_attention",
    "prefill_config",
]
