"""The statistics of the probe, in plain functions (docs/probe.md, "The statistics").

- ``log_likelihood``: the multinomial log-likelihood of the observed cell counts under a predicted
  distribution, each probability floored at ``FLOOR`` (a draw a hypothesis calls impossible costs
  ln(1e-6) = -13.8 instead of -infinity, so one odd draw cannot end a comparison by itself, and the
  number of such draws is reported).
- ``g_test``: the likelihood-ratio goodness-of-fit test (G = 2 sum O ln(O / E)) with cells of
  expected count < 5 pooled, and its chi-square p-value. A hypothesis with p < 0.001 is rejected.
- ``chi2_sf``: the chi-square survival function (regularised upper incomplete gamma), so the probe
  needs no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

FLOOR = 1e-6
LEAD = math.log(1000.0)  # the log-likelihood ratio the best hypothesis must lead the next by
REJECT_P = 1e-3


def log_likelihood(counts: Sequence[int], probs: Sequence[float]) -> tuple[float, int]:
    """(sum_i c_i ln max(p_i, FLOOR), how many draws fell where p_i < FLOOR)."""
    ll, impossible = 0.0, 0
    for c, p in zip(counts, probs, strict=True):
        if c:
            ll += c * math.log(max(p, FLOOR))
            if p < FLOOR:
                impossible += c
    return ll, impossible


def _gamma_q(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a): series below a + 1, continued fraction above."""
    if x <= 0:
        return 1.0
    gln = math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - gln))
    b = x + 1 - a
    c = 1.0 / 1e-300
    d = 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - gln) * h


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square(df)."""
    if df <= 0:
        return 1.0 if x <= 0 else 0.0
    return _gamma_q(df / 2.0, x / 2.0)


def g_statistic(counts: Sequence[int], probs: Sequence[float]) -> tuple[float, int]:
    """(G, degrees of freedom) for one multinomial sample; cells expected < 5 are pooled."""
    total = sum(counts)
    if total == 0:
        return 0.0, 0
    cells: list[tuple[float, float]] = []
    pool_o, pool_e = 0.0, 0.0
    for c, p in zip(counts, probs, strict=True):
        e = total * max(p, 0.0)
        if e < 5:
            pool_o += c
            pool_e += e
        else:
            cells.append((c, e))
    if pool_o or pool_e:
        cells.append((pool_o, pool_e))
    g = 0.0
    for o, e in cells:
        if o > 0:
            g += 2 * o * math.log(o / max(e, total * FLOOR))
        # o == 0 contributes 0 to G (its expected mass is accounted for by the other cells)
    return max(g, 0.0), max(len(cells) - 1, 0)


def combined_p(parts: Sequence[tuple[float, int]]) -> float:
    """The p-value of the summed G over independent samples (their dfs add)."""
    g = sum(p[0] for p in parts)
    df = sum(p[1] for p in parts)
    if df == 0:
        return 1.0 if g < 1e-9 else 0.0
    return chi2_sf(g, df)


def total_variation(p: Sequence[float], q: Sequence[float]) -> float:
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))
