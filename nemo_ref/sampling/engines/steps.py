"""The shared step functions every engine is built from (numpy, float64, one row).

Each step takes the current logits `z` (float64 [V]; a removed token is -inf and nothing brings it
back) and returns new logits; an engine (spec.py) is a choice of steps, their order and their
variants. The variants are the whole point of this package, so each is a named argument here, not a
separate function per engine:

- repetition_penalty(sign="positive_divides" | "ctrl_divides_all")
- min_p (before or after temperature is a matter of where the engine puts it)
- top_k(ties="keep" | "exactly_k")
- top_p(boundary="lt" | "le"): keep t iff A(t) < p (vLLM, HF, llama.cpp) or A(t) <= p (SGLang,
  mistral-inference), where A(t) is the mass ranked strictly above t. Renormalisation is again a
  matter of order: top_p measures the distribution of the logits it is given.

Rank order everywhere is nemo_ref's: descending logit, ties by ascending id. Engines whose sort
leaves the order of equal logits unspecified are emulated with that order (and say so).

Speed: nothing here sorts the vocabulary (it is partitioned only for k above V/32). top_k and top_p
work on a prefix of the rank order (`rank_prefix`): a bound from block maxima narrows the vocabulary
to a few candidates, which alone are sorted. top_p walks a sorted prefix of 256 ranks; when the cut lies further down (a
flat distribution), value buckets locate it and only the bucket holding it is sorted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

NEG_INF = -math.inf
TOP_P_SORTED_PREFIX = 256  # ranks top_p sorts first; a walk past them goes to value buckets
TOP_P_BUCKETS = 1024
BUCKET_SORT_LIMIT = 4096  # a bucket this small is sorted and walked
BLOCK, MIN_BLOCK = 64, 8  # block sizes of the candidate search (see _top_candidates)


def finite_count(z: np.ndarray) -> int:
    return int(np.count_nonzero(z > NEG_INF))


def _top_candidates(z: np.ndarray, n: int) -> np.ndarray:
    """Ids of every token whose value is >= the n-th largest (a superset of the n first ranks, with
    the whole tie group at the cut), without partitioning the vocabulary: the n-th largest of the
    block maxima is a lower bound of the n-th largest value (n blocks each hold a value at
    least that large), so comparing against it keeps every needed id and few others."""
    block = min(BLOCK, z.size // (4 * n))  # at least 4n blocks, so the bound stays tight
    if block >= MIN_BLOCK:
        blocks = z.size // block
        block_max = z[: blocks * block].reshape(blocks, block).max(axis=1)
        bound = np.partition(block_max, blocks - n)[blocks - n]
        if bound > NEG_INF:
            return np.flatnonzero(z >= bound)  # ids past the last whole block are compared too
    ids = np.flatnonzero(z > NEG_INF)
    if ids.size > 4 * n:
        v = z[ids]
        return ids[v >= np.partition(v, v.size - n)[v.size - n]]
    return ids


def rank_prefix(z: np.ndarray, n: int) -> np.ndarray:
    """The first n token ids in rank order (descending z, ties lower id first); n <= #finite."""
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    cand = _top_candidates(z, n)
    order = np.lexsort((cand, -z[cand]))  # primary: -z ascending; secondary: id ascending
    return cand[order[:n]]


def _finite_ids_if_sparse(z: np.ndarray) -> np.ndarray | None:
    """The ids of the finite logits when they are few (after a truncation), else None: exp over
    those alone is much cheaper than over the vocabulary."""
    ids = np.flatnonzero(z > NEG_INF)
    return ids if ids.size * 4 < z.size else None


def softmax(z: np.ndarray) -> np.ndarray:
    m = z.max()
    ids = _finite_ids_if_sparse(z)
    if ids is None:
        w = np.exp(z - m)  # exp(-inf) = 0: removed tokens get exactly 0
        return w / w.sum()
    out = np.zeros_like(z)
    w = np.exp(z[ids] - m)
    out[ids] = w / w.sum()
    return out


def log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max()
    return (z - m) - math.log(np.exp(z - m).sum())


def keep_only(z: np.ndarray, ids: np.ndarray) -> np.ndarray:
    out = np.full_like(z, NEG_INF)
    out[ids] = z[ids]
    return out


# ---- the steps -----------------------------------------------------------------------------------


def logit_bias(z: np.ndarray, bias: Mapping[int, float]) -> np.ndarray:
    """z_i += bias_i (a -inf stays -inf)."""
    out = z.copy()
    for i, b in bias.items():
        out[i] += b
    return out


def repetition_penalty(
    z: np.ndarray, r: float, ids: np.ndarray, sign: str = "positive_divides"
) -> np.ndarray:
    """Once per distinct id in `ids`. "positive_divides": z > 0 -> z / r, else z * r (the engines'
    three spellings `z > 0`, `z < 0`, `z <= 0` agree: at z = 0 both branches give 0).
    "ctrl_divides_all": the CTRL paper, z / r for every sign (a negative logit then *rises*)."""
    out = z.copy()
    ids = np.unique(ids)
    v = out[ids]
    out[ids] = v / r if sign == "ctrl_divides_all" else np.where(v > 0, v / r, v * r)
    return out


def additive_penalties(
    z: np.ndarray, ids: np.ndarray, counts: np.ndarray, presence: float, frequency: float
) -> np.ndarray:
    """OpenAI's formula z_i -= c_i * frequency + (c_i > 0) * presence, over the given window."""
    out = z.copy()
    out[ids] -= counts * frequency + (counts > 0) * presence
    return out


def normalised_frequency(
    z: np.ndarray, ids: np.ndarray, counts: np.ndarray, length: int, f: float
) -> np.ndarray:
    """TGI's frequency penalty: z_i -= f * c_i / length (length = every token of the sequence)."""
    out = z.copy()
    out[ids] -= f * counts / max(length, 1)
    return out


def greedy(z: np.ndarray) -> np.ndarray:
    """Only the rank-0 token (highest logit, lowest id among ties) stays."""
    return keep_only(z, np.array([int(np.argmax(z))]))  # argmax returns the first maximum


def temperature(z: np.ndarray, t: float) -> np.ndarray:
    """(z - max z) / T: the same distribution as z / T, exact for tiny T (nemo_ref's S5)."""
    return (z - z.max()) / t


def min_p(z: np.ndarray, m: float) -> np.ndarray:
    """Drop p_i < m * p_max, i.e. z_i < max z + ln m (a tie with the cut stays)."""
    cut = z.max() + math.log(m)
    return np.where(z >= cut, z, NEG_INF)


def top_k(z: np.ndarray, k: int, ties: str = "exactly_k") -> np.ndarray:
    """ "exactly_k": the first k ranks. "keep": every token >= the k-th largest value stays."""
    finite = finite_count(z)
    if not 0 < k < finite:
        return z
    if ties == "keep":
        kth = z[rank_prefix(z, k)[-1]]
        return np.where(z >= kth, z, NEG_INF)
    return keep_only(z, rank_prefix(z, k))


def _walk(order: np.ndarray, q: np.ndarray, above: float, p: float, boundary: str) -> np.ndarray:
    """The prefix of `order` (ids in rank order, preceded by mass `above`) whose A(t) passes."""
    a = above + np.concatenate(([0.0], np.cumsum(q[order])[:-1]))  # A(t), a running sum
    fails = np.flatnonzero(a >= p if boundary == "lt" else a > p)
    return order[: fails[0]] if fails.size else order


def _walk_buckets(
    z: np.ndarray, q: np.ndarray, ids: np.ndarray, above: float, p: float, boundary: str
) -> np.ndarray:
    """The ids of `ids` (all ranked after mass `above`) that top_p keeps, without sorting them all:
    bucket their values (a bucket holds a contiguous stretch of the rank order), keep every bucket
    whose end stays below the cut, and walk only the bucket the cut falls in (recursively)."""
    if ids.size <= BUCKET_SORT_LIMIT:
        return _walk(ids[np.lexsort((ids, -z[ids]))], q, above, p, boundary)
    v = z[ids]
    hi, lo = v.max(), v.min()
    if hi == lo:  # one tie group: its rank order is the id order
        return _walk(ids, q, above, p, boundary)
    bucket = ((hi - v) * ((TOP_P_BUCKETS - 1) / (hi - lo))).astype(np.int64)  # 0 holds the largest
    mass = np.bincount(bucket, weights=q[ids], minlength=TOP_P_BUCKETS)
    end = above + np.cumsum(mass)  # the mass up to the end of each bucket
    crossing = np.flatnonzero(end >= p if boundary == "lt" else end > p)
    if not crossing.size:
        return ids
    j = int(crossing[0])
    inner = _walk_buckets(z, q, ids[bucket == j], float(end[j] - mass[j]), p, boundary)
    return np.concatenate([ids[bucket < j], inner])


def top_p(z: np.ndarray, p: float, boundary: str = "lt") -> np.ndarray:
    """Walk the rank order of softmax(z); keep rank 0 and every t with A(t) < p ("lt") or A(t) <= p
    ("le"), A being the running mass of the ranks before t. A peaked distribution stops within the
    first ranks (a sorted prefix); a flat one is cut by value buckets (_walk_buckets)."""
    m = z.max()
    ids = _finite_ids_if_sparse(z)
    q = np.exp(z - m) if ids is None else np.zeros_like(z)
    if ids is None:
        q /= q.sum()
    else:
        w = np.exp(z[ids] - m)
        q[ids] = w / w.sum()
    finite = finite_count(z) if ids is None else ids.size
    n = min(TOP_P_SORTED_PREFIX, finite)
    prefix = rank_prefix(z, n)
    kept = _walk(prefix, q, 0.0, p, boundary)
    if kept.size < n or n == finite:
        return keep_only(z, kept if kept.size else prefix[:1])  # the top token always stays
    ids = np.flatnonzero(z > NEG_INF) if ids is None else ids
    return keep_only(z, _walk_buckets(z, q, ids, 0.0, p, boundary))
