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

Speed: nothing here sorts or partitions the vocabulary. top_k and top_p work on a prefix of the rank
order (`rank_prefix`): a bound from 64-id block maxima narrows the vocabulary to a few candidates,
which alone are sorted; top_p grows its prefix x8 while the walk has not stopped inside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

NEG_INF = -math.inf
TOP_P_FIRST_CANDIDATES = 256  # ranks top_p looks at first; x8 until the walk stops inside them
BLOCK = 64  # block size of the candidate search (see _top_candidates)


def finite_count(z: np.ndarray) -> int:
    return int(np.count_nonzero(z > NEG_INF))


def _top_candidates(z: np.ndarray, n: int) -> np.ndarray:
    """Ids of every token whose value is >= the n-th largest (a superset of the n first ranks, with
    the whole tie group at the cut), without partitioning the vocabulary: the n-th largest of the
    64-id block maxima is a lower bound of the n-th largest value (n blocks each hold a value at
    least that large), so comparing against it keeps every needed id and few others."""
    blocks = z.size // BLOCK
    if 4 * n <= blocks:
        block_max = z[: blocks * BLOCK].reshape(blocks, BLOCK).max(axis=1)
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


def top_p(z: np.ndarray, p: float, boundary: str = "lt") -> np.ndarray:
    """Walk the rank order of softmax(z); keep rank 0 and every t with A(t) < p ("lt") or A(t) <= p
    ("le"); A is a running (sequential) sum, as the engines' cumsum is."""
    m = z.max()
    sparse = _finite_ids_if_sparse(z)
    total = np.exp((z if sparse is None else z[sparse]) - m).sum()
    finite = finite_count(z) if sparse is None else sparse.size
    n = min(TOP_P_FIRST_CANDIDATES, finite)
    while True:
        ids = rank_prefix(z, n)
        above = np.zeros(ids.size)
        above[1:] = np.cumsum(np.exp(z[ids] - m) / total)[:-1]  # A(t): running mass of the ranks before t
        fails = (above >= p) if boundary == "lt" else (above > p)
        fails[0] = False  # the top token always stays
        stop = np.flatnonzero(fails)
        if stop.size or n == finite:
            return keep_only(z, ids[: stop[0]] if stop.size else ids)
        n = min(n * 8, finite)
