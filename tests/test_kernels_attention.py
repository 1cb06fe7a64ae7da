"""Attention kernels under Triton's interpreter (CPU tensors) against plain torch math."""

from __future__ import annotations

import pytest
import torch
from nemo_ref.kernels import interpreted

A = interpreted("attention")  # sets TRITON_INTERPRET=1 (reloads the module if imported compiled)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Compared with the float32 math rounded to the output dtype: within ~1 ulp of the output.
TOL = {torch.float32: (2e-5, 2e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}


def reference(q, k, v, start_pos, scale=None):
    """softmax(q k^T * scale + causal mask) v in float32, K/V expanded per GQA group."""
    _, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    scale = D**-0.5 if scale is None else scale
    k = k.float().repeat_interleave(H // Hkv, dim=1)  # query head h reads KV head h // group
    v = v.float().repeat_interleave(H // Hkv, dim=1)
    scores = q.float() @ k.transpose(-1, -2) * scale  # [B, H, T, S]
    q_pos = start_pos[:, None] + torch.arange(T)  # [B, T]
    visible = torch.arange(S)[None, None, :] <= q_pos[:, :, None]  # [B, T, S]
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


def check(out, q, k, v, start_pos, scale=None):
    assert out.dtype == q.dtype and out.shape == q.shape
    expected = reference(q, k, v, start_pos, scale).to(q.dtype).float()
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


def test_decode_split_len_fills_the_gpu():
    # ~4 programs per SM: batch-1 Nemo (8 KV heads) at 128k on a 132-SM H100 -> 64 splits of 2048.
    assert A.decode_split_len(1, 8, 131072, 64, num_sms=132) == 2048
    assert A.decode_split_len(128, 8, 4096, 64, num_sms=132) == 4096  # batch alone fills it
    assert A.decode_split_len(1, 8, 100, 64, num_sms=1) == 128  # a multiple of the tile


def test_rejects_bad_shapes():
    q, k, v, start_pos = make(1, 6, 4, 1, 32, [3], torch.float32)
    with pytest.raises(ValueError, match="GQA"):
        A.attention(q, k, v, start_pos)
    q, k, v, start_pos = make(1, 4, 2, 1, 24, [3], torch.float32)
    with pytest.raises(ValueError, match="power of two"):
        A.attention(q, k, v, start_pos)
    q, k, v, start_pos = make(2, 4, 2, 1, 32, [3, 4], torch.float32)
    with pytest.raises(ValueError, match="start_pos"):
        A.attention(q, k, v, start_pos[:1])
