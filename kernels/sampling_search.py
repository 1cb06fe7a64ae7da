"""Sort-free rank-order cuts over a row of float32 logits: the building blocks of the S7..S9 kernel.

Each value ``y`` maps to an int32 key whose integer order is the float order (``_ordered_key``).
"Keep the first ``k`` tokens in rank order" (S7 of docs/sampling.md) and "keep ranks while the
mass before them is ``< p``" (S8) are the same question: find the largest key ``t`` with
``W(key >= t) >= target``, where ``W`` counts tokens (target ``k``) or sums their ``exp(y)``
(target ``p * Z``). ``_cut`` answers it with a binary search over the key range, each step one
``_weigh`` pass over its input, snapping the bounds to keys that exist so it stops as soon as one
value is left (at most 32 steps). Every token with ``key > t`` survives; the tokens *tied* at
``t`` survive in ascending id order while ``W(key > t) + W(ties with smaller id) < target`` (one
more pass with a prefix sum), so ties go to the lower id and exactly ``k`` tokens survive (S7),
and the top_p walk stops at the first failure (S8). A survivor is then ``key > t or (key == t
and id <= cut)`` per stage (``_chunk``); the draw (S9, ``_draw``) is one prefix-sum pass in
ascending id order.

The input of these passes is a row pointer and a length: the whole row, or the candidate buffer
``_sample_kernel`` compacts (ids ascending, so "lower id" is "lower position"; ``_row_id`` maps a
position back to its id). Memory traffic: every pass reads its input once (4 B per entry).
"""

from __future__ import annotations

import triton
import triton.language as tl

KEY_NEG_INF: tl.constexpr = tl.constexpr(-2139095041)  # _ordered_key(-inf)
KEY_OFF: tl.constexpr = tl.constexpr(-(2**31))  # a threshold below every key: stage disabled
ID_BIG: tl.constexpr = tl.constexpr(2**31 - 1)
BUCKETS_PER_UNIT: tl.constexpr = tl.constexpr(8.0)  # candidate histogram: buckets of y per unit


@triton.jit
def _ordered_key(y):
    """int32 key with the order of the float32 ``y`` (-0.0 folded into +0.0)."""
    bits = tl.where(y == 0.0, 0.0, y).to(tl.int32, bitcast=True)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


@triton.jit
def _chunk(z_row, start, V, zmax, temp, floor, k_key, k_id, p_key, p_id, BLOCK_V: tl.constexpr):
    """One chunk of a row after S5: ids, ``y = (z - max z) / T``, keys, and who survives.

    Survives: ``y >= floor`` (S6 and finiteness) and above the top_k and top_p cuts, each a pair
    (key, last id kept among the ties at that key).
    """
    offs = start + tl.arange(0, BLOCK_V)
    z = tl.load(z_row + offs, mask=offs < V, other=float("-inf"))
    y = tl.math.div_rn(z - zmax, temp)
    key = _ordered_key(y)
    keep = (offs < V) & (y >= floor)
    keep &= (key > k_key) | ((key == k_key) & (offs <= k_id))
    keep &= (key > p_key) | ((key == p_key) & (offs <= p_id))
    return offs, y, key, keep


@triton.jit
def _weigh(z_row, V, t, use_mass, zmax, temp, floor, k_key, k_id, p_key, p_id, BLOCK_V: tl.constexpr):
    """One pass: ``W(key >= t)`` over survivors, the smallest key ``>= t``, the largest ``< t``.

    ``W`` counts tokens, or sums ``exp(y)`` when ``use_mass``.
    """
    w_ge = 0.0
    min_ge = ID_BIG
    max_lt = KEY_OFF
    for start in range(0, V, BLOCK_V):
        _offs, y, key, keep = _chunk(z_row, start, V, zmax, temp, floor, k_key, k_id, p_key, p_id, BLOCK_V)
        # -- weigh the survivors at or above t; track the nearest keys either side of it --
        ge = keep & (key >= t)
        w_ge += tl.sum(tl.where(ge, tl.where(use_mass, tl.exp(y), 1.0), 0.0))
        min_ge = tl.minimum(min_ge, tl.min(tl.where(ge, key, ID_BIG)))
        max_lt = tl.maximum(max_lt, tl.max(tl.where(keep & (key < t), key, KEY_OFF)))
    return w_ge, min_ge, max_lt


@triton.jit
def _cut(
    z_row, V, target, use_mass, lo, zmax, temp, floor, k_key, k_id, p_key, p_id,
    BLOCK_V: tl.constexpr,
):  # fmt: skip
    """The (key, last id) cut that keeps the rank-order prefix with ``W(before) < target``.

    Needs ``W(key >= lo) >= target`` (``lo`` a lower bound of the keys) and every key ``<= 0``
    (``y <= 0``). Binary search for ``t`` = the largest key with ``W(key >= t) >= target``;
    invariants ``W(key >= lo) >= target`` and ``W(key > hi) = w_above < target``. Then the ties
    at ``t``, in id order: the first whose ``w_above + W(earlier ties) >= target`` and all after
    it are cut.
    """
    hi = 0
    w_above = 0.0
    passes = 1  # the tie pass below
    while lo < hi:
        passes += 1
        # -- binary search step: one _weigh pass at the midpoint key --
        mid = lo + (hi - lo + 1) // 2
        w_ge, min_ge, max_lt = _weigh(
            z_row, V, mid, use_mass, zmax, temp, floor, k_key, k_id, p_key, p_id, BLOCK_V
        )
        up = w_ge >= target
        lo = tl.where(up, min_ge, lo)
        hi = tl.where(up, hi, max_lt)
        w_above = tl.where(up, w_above, w_ge)
    t = lo
    first_cut = ID_BIG
    run = w_above
    for start in range(0, V, BLOCK_V):
        offs, y, key, keep = _chunk(z_row, start, V, zmax, temp, floor, k_key, k_id, p_key, p_id, BLOCK_V)
        # -- ties at t, in id order: the first that reaches the target is cut --
        tie = keep & (key == t)
        w = tl.where(tie, tl.where(use_mass, tl.exp(y), 1.0), 0.0)
        before = run + tl.cumsum(w, 0) - w
        first_cut = tl.minimum(first_cut, tl.min(tl.where(tie & (before >= target), offs, ID_BIG)))
        run += tl.sum(w)
    return t, first_cut - 1, passes


@triton.jit
def _bucket(y, N_BUCKETS: tl.constexpr):
    """Bucket of ``y <= 0`` for the candidate histogram: ``floor(-y * BUCKETS_PER_UNIT)``, the
    last bucket holding everything below ``-N_BUCKETS / BUCKETS_PER_UNIT``."""
    return tl.minimum(-y * BUCKETS_PER_UNIT, N_BUCKETS - 1.0).to(tl.int32)


@triton.jit
def _draw(z_row, V, u, zmax, temp, floor, k_key, k_id, p_key, p_id, BLOCK_V: tl.constexpr):
    """S9: (position of the token, total mass of the survivors, passes made).

    The mass pass, then the prefix-sum pass in ascending id order: the token is the smallest
    position with ``prefix > u * mass`` (the last survivor if rounding leaves none).
    """
    mass, _unused_min, _unused_max = _weigh(
        z_row, V, KEY_NEG_INF, True, zmax, temp, floor, k_key, k_id, p_key, p_id, BLOCK_V
    )
    target = u * mass.to(tl.float64)
    run = 0.0
    token = ID_BIG
    last = -1
    for start in range(0, V, BLOCK_V):
        offs, y, _key, keep = _chunk(z_row, start, V, zmax, temp, floor, k_key, k_id, p_key, p_id, BLOCK_V)
        # -- prefix sums in id order: the token is the first prefix past u * mass --
        q = tl.where(keep, tl.exp(y), 0.0)
        prefix = run + tl.cumsum(q, 0)
        token = tl.minimum(token, tl.min(tl.where(keep & (prefix > target), offs, ID_BIG)))
        last = tl.maximum(last, tl.max(tl.where(keep, offs, -1)))
        run += tl.sum(q)
    token = tl.where(token == ID_BIG, last, token)  # rounding: u * mass >= every prefix
    return token, mass, 2


@triton.jit
def _row_id(ids, cut, n):
    """A tie cut given as a buffer position, as a row id (buffer positions ascend with ids)."""
    row_id = tl.load(ids + tl.minimum(tl.maximum(cut, 0), n - 1))
    return tl.where(cut < 0, -1, tl.where(cut >= n, ID_BIG - 1, row_id))
