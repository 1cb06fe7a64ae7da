"""Attention kernels under Triton's interpreter (CPU tensors) against plain torch math."""

from __future__ import annotations

import pytest
import torch
from nemo_ref.kernels import interpreted

A = interpreted("attention")  # sets TRITON_INTERPRET=1 (reloads the module if imported compiled)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Compared with the float32 math rounded to the output dtype: within ~1 ulp of the output.
TOL = {torch.float32: (2e-5, 2e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}


def reference(q, k, v, start_pos, scale=None, window=None):
    """softmax(q k^T * scale + causal mask) v in float32, K/V expanded per GQA group; with a
    sliding window, query p sees keys p - window < j <= p."""
    _, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    scale = D**-0.5 if scale is None else scale
    k = k.float().repeat_interleave(H // Hkv, dim=1)  # query head h reads KV head h // group
    v = v.float().repeat_interleave(H // Hkv, dim=1)
    scores = q.float() @ k.transpose(-1, -2) * scale  # [B, H, T, S]
    q_pos = start_pos[:, None] + torch.arange(T)  # [B, T]
    visible = torch.arange(S)[None, None, :] <= q_pos[:, :, None]  # [B, T, S]
    if window is not None:
        visible &= torch.arange(S)[None, None, :] > q_pos[:, :, None] - window
    scores = scores.masked_fill(~visible[:, None], float("-inf"))
    return scores.softmax(-1) @ v


def make(B, H, Hkv, T, D, start_pos, dtype, extra_keys=3, seed=0, cache_layout=False):
    g = torch.Generator().manual_seed(seed)
    S = max(start_pos) + T + extra_keys
    q = torch.randn(B, H, T, D, generator=g).to(dtype)
    if cache_layout:  # a [B, S, Hkv, D] cache viewed as [B, Hkv, S, D]: strided, no copy
        k = torch.randn(B, S, Hkv, D, generator=g).to(dtype).transpose(1, 2)
        v = torch.randn(B, S, Hkv, D, generator=g).to(dtype).transpose(1, 2)
    else:
        k = torch.randn(B, Hkv, S, D, generator=g).to(dtype)
        v = torch.randn(B, Hkv, S, D, generator=g).to(dtype)
    return q, k, v, torch.tensor(start_pos)


def check(out, q, k, v, start_pos, scale=None, window=None):
    assert out.dtype == q.dtype and out.shape == q.shape
    expected = reference(q, k, v, start_pos, scale, window).to(q.dtype).float()
    rtol, atol = TOL[q.dtype]
    torch.testing.assert_close(out.float(), expected, rtol=rtol, atol=atol)


# (B, H, Hkv, T, D, start_pos): GQA 4 / 1 / 8, T not a multiple of the block, rows at different
# offsets (a fresh prefill next to a continuation after cached tokens), head_dim 32 and 64.
PREFILL_CASES = [
    (2, 4, 1, 37, 32, [0, 5]),
    (1, 2, 2, 50, 64, [20]),
    (2, 8, 1, 19, 32, [3, 40]),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", PREFILL_CASES, ids=lambda c: f"B{c[0]}H{c[1]}kv{c[2]}T{c[3]}D{c[4]}")
def test_prefill_matches_torch(case, dtype):
    B, H, Hkv, T, D, start = case
    q, k, v, start_pos = make(B, H, Hkv, T, D, start, dtype, cache_layout=(Hkv == 2))
    out = A.prefill_attention(q, k, v, start_pos, block_m=16, block_n=16)
    check(out, q, k, v, start_pos)


def test_prefill_default_blocks_and_scale():
    # The launcher's default tiles (64x32 for float32) on a short sequence, a custom scale.
    q, k, v, start_pos = make(2, 4, 2, 21, 32, [0, 9], torch.float32, extra_keys=40)
    out = A.prefill_attention(q, k, v, start_pos, scale=0.3)
    check(out, q, k, v, start_pos, scale=0.3)


# (B, H, Hkv, D, start_pos): rows with very different lengths, so some splits are empty.
DECODE_CASES = [
    (3, 8, 2, 64, [0, 40, 99]),
    (2, 4, 4, 32, [70, 5]),
    (2, 8, 1, 32, [33, 64]),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", DECODE_CASES, ids=lambda c: f"B{c[0]}H{c[1]}kv{c[2]}D{c[3]}")
def test_decode_matches_torch(case, dtype):
    B, H, Hkv, D, start = case
    q, k, v, start_pos = make(B, H, Hkv, 1, D, start, dtype, cache_layout=(Hkv == 4))
    out = A.decode_attention(q, k, v, start_pos, split_len=32, block_n=16)
    check(out, q, k, v, start_pos)


def test_decode_default_split_and_dispatch():
    # attention() with T == 1 takes the decode path (default split length and tile), T > 1 prefill.
    q, k, v, start_pos = make(2, 8, 2, 1, 32, [17, 80], torch.float32)
    check(A.attention(q, k, v, start_pos), q, k, v, start_pos)
    q2, k2, v2, start_pos2 = make(2, 8, 2, 3, 32, [17, 80], torch.float32)
    check(A.attention(q2, k2, v2, start_pos2), q2, k2, v2, start_pos2)


def test_decode_splits_fill_the_gpu_with_what_fits_and_not_less_than_a_minimum():
    # 3 programs per SM fit (shared memory; tests/kernels/test_compile.py checks it on the compiled
    # kernel): batch-1 Nemo (8 KV heads) on a 132-SM H100 -> 50 splits, 400 programs; at 128k
    # each is 2624 keys (a multiple of the 64-key tile).
    assert A.DECODE_PROGRAMS_PER_SM == 3
    assert A.decode_max_splits(8, num_sms=132) == 50
    assert A.decode_split_len(131072, 50) == 2624
    # Short rows are not cut below the minimum split (the partial outputs would cost more).
    assert A.decode_split_len(1000, 50) == A.MIN_SPLIT_LEN == 256
    assert A.decode_split_len(100, 1, min_split=16, block_n=64) == 128  # a multiple of the tile


def cache_with_rows(B, N, H, Hkv, T, D, start, dtype, rows, seed=0, poison=None):
    """A whole cache [N, Hkv, S, D] holding the batch's rows at ``rows``; the rest random, and
    every position at or past a row's own length set to ``poison`` when given (a reused slot)."""
    q, k, v, start_pos = make(B, H, Hkv, T, D, start, dtype, extra_keys=20, seed=seed)
    S = k.shape[2]
    g = torch.Generator().manual_seed(seed + 1)
    kc = torch.randn(N, Hkv, S, D, generator=g).to(dtype)
    vc = torch.randn(N, Hkv, S, D, generator=g).to(dtype)
    kc[rows], vc[rows] = k, v
    if poison is not None:
        for b, r in enumerate(rows.tolist()):
            kc[r, :, start[b] + T :] = poison
            vc[r, :, start[b] + T :] = poison
    return q, k, v, kc, vc, start_pos


@pytest.mark.parametrize("T", [1, 21])
def test_kernels_read_the_whole_cache_in_place_through_rows_and_never_past_a_row_s_length(T):
    # Rows 4, 0, 2 of a 5-row cache; a NaN-filled tail past each row's own length (what a longer
    # sequence that produced NaN leaves in a reused slot) must not reach any output: prefill's
    # last tile and decode's last split stop loading at the row's length.
    rows = torch.tensor([4, 0, 2])
    start = [3, 40, 17]
    q, k, v, kc, vc, start_pos = cache_with_rows(
        3, 5, 8, 2, T, 32, start, torch.float32, rows, poison=float("nan")
    )
    if T == 1:
        out = A.decode_attention(q, kc, vc, start_pos, rows=rows, split_len=32, block_n=16)
    else:
        out = A.prefill_attention(q, kc, vc, start_pos, rows=rows, block_m=16, block_n=16)
    check(out, q, k.nan_to_num(0), v.nan_to_num(0), start_pos)
    check(A.attention(q, kc, vc, start_pos, rows=rows, max_len=max(start) + T), q, k, v, start_pos)


def test_decode_is_bitwise_the_same_for_a_row_alone_or_in_any_batch():
    # A row's splits depend on its own length only: alone (a 1-split grid) or next to a longer
    # row (more splits in the grid, more chunks in the combine) its output is the same bits.
    rows = torch.tensor([1, 0, 2])
    start = [37, 150, 5]
    q, k, v, kc, vc, start_pos = cache_with_rows(3, 3, 8, 2, 1, 32, start, torch.float32, rows)
    kw = dict(min_split=16, max_splits=4, block_n=16)
    batched = A.decode_attention(q, kc, vc, start_pos, rows=rows, **kw)
    check(batched, q, k, v, start_pos)
    for b in range(3):
        alone = A.decode_attention(q[b : b + 1], kc, vc, start_pos[b : b + 1], rows=rows[b : b + 1], **kw)
        assert torch.equal(alone, batched[b : b + 1]), f"row {b}"
    # ...and whatever host-side bound sizes the grid (the CUDA-graph path uses the cache length).
    wide = A.decode_attention(q, kc, vc, start_pos, rows=rows, max_len=kc.shape[2], **kw)
    assert torch.equal(wide, batched)


def test_rejects_bad_shapes():
    q, k, v, start_pos = make(1, 6, 4, 1, 32, [3], torch.float32)
    with pytest.raises(ValueError, match="GQA"):
        A.attention(q, k, v, start_pos)
    q, k, v, start_pos = make(1, 4, 2, 1, 24, [3], torch.float32)
    with pytest.raises(ValueError, match="head_dim"):
        A.attention(q, k, v, start_pos)
    q, k, v, start_pos = make(2, 4, 2, 1, 32, [3, 4], torch.float32)
    with pytest.raises(ValueError, match="start_pos"):
        A.attention(q, k, v, start_pos[:1])
    with pytest.raises(ValueError, match="rows"):
        A.attention(q, k, v, start_pos, rows=torch.tensor([0]))


def test_rejects_tiles_the_gpu_compiler_or_shared_memory_cannot_take():
    q, k, v, start_pos = make(1, 4, 2, 5, 32, [3], torch.float32)
    with pytest.raises(ValueError, match="block_n must be a power of two >= 16"):
        A.prefill_attention(q, k, v, start_pos, block_n=8)
    with pytest.raises(ValueError, match="block_m"):
        A.prefill_attention(q, k, v, start_pos, block_m=8)
    with pytest.raises(ValueError, match="block_n"):
        A.decode_attention(q[:, :, :1], k, v, start_pos, block_n=8)
    # head_dim 256 at 128 x 64 tiles and 3 stages needs 262144 B; sm_90 allows 232448.
    q, k, v, start_pos = make(1, 2, 1, 2, 256, [0], torch.bfloat16)
    with pytest.raises(ValueError, match="262144 B of shared memory; sm_90 allows 232448"):
        A.prefill_launch(q, k, v, start_pos, block_m=128, block_n=64, num_stages=3)
    # The defaults for 256 fit (and compile: tests/kernels/test_compile.py).
    for fp32 in (False, True):
        bm, bn, _, stages = A.prefill_config(fp32, 256)
        assert A.prefill_shared_bytes(bm, bn, stages, 256, 4 if fp32 else 2) <= A.SM90_MAX_SHARED
        bn, _, stages = A.decode_config(fp32, 256)
        assert A.decode_shared_bytes(bn, stages, 256, 4 if fp32 else 2) <= A.SM90_MAX_SHARED


@pytest.mark.parametrize("window", [1, 7, 40])
def test_sliding_window_in_prefill_and_decode(window):
    # Windows shorter than a tile, across tiles, and longer than some rows; rows continuing after
    # cached keys; decode with several splits, the first starting at the window's edge.
    q, k, v, start_pos = make(2, 8, 2, 37, 32, [0, 45], torch.float32)
    check(A.prefill_attention(q, k, v, start_pos, window=window, block_m=16, block_n=16), q, k, v, start_pos,
          window=window)  # fmt: skip
    q, k, v, start_pos = make(3, 8, 2, 1, 32, [3, 70, 129], torch.float32)
    out = A.decode_attention(q, k, v, start_pos, window=window, min_split=16, max_splits=3, block_n=16)
    check(out, q, k, v, start_pos, window=window)
