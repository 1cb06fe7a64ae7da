"""The pure-Python reference sampler: docs/sampling.md as code, one function per step S0..S9.

Plain lists of Python floats (float64) and `math` only, so every operation can be read and checked
by hand; it is slow (a Python sort of the vocabulary for top_k / top_p) and exists to be the oracle
that the batched torch sampler and the Triton kernel are tested against.

Conventions used throughout:
- `z` is a list of logits; a removed token is `-inf`, and nothing ever brings it back.
- rank order: token i before j iff z_i > z_j, or z_i == z_j and i < j (ties go to the lower id).
- the S9 draw uses unnormalised weights w_i = exp(z_i - max z); the spec's rule
  "cumsum(q) > u * sum(q)" holds for any positive scaling of q, and skipping the division makes
  the running sum and its total the same float (so u < 1 always lands on a token).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from .params import SamplingParams
from .rng import uniform

NEG_INF = -math.inf


class SamplingError(ValueError):
    """The logits or the history cannot be sampled (NaN logits, every token removed, bad ids)."""


@dataclass
class SampleResult:
    """One sampled token; `logprob` and `top` follow params.logprobs_mode ("raw" or "processed")."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


# ---- helpers ------------------------------------------------------------------------------------


def as_floats(logits: Any) -> list[float]:
    """A 1-D list of Python floats from a list or a 1-D tensor; NaN and +inf are errors."""
    values = logits.tolist() if hasattr(logits, "tolist") else list(logits)
    if values and isinstance(values[0], (list, tuple)):
        raise SamplingError("logits must be one-dimensional (one position of one row)")
    z = [float(x) for x in values]
    if not z:
        raise SamplingError("logits are empty")
    if any(math.isnan(x) or x == math.inf for x in z):
        raise SamplingError("logits contain NaN or +inf")
    return z


def rank_order(z: Sequence[float]) -> list[int]:
    """Token ids by descending logit, ties by ascending id (the spec's total order)."""
    return sorted(range(len(z)), key=lambda i: (-z[i], i))


def softmax(z: Sequence[float]) -> list[float]:
    m = max(z)
    w = [math.exp(x - m) for x in z]  # exp(-inf) == 0.0: removed tokens get exactly 0
    total = math.fsum(w)  # correctly rounded: the sum does not depend on the order of the vocab
    return [x / total for x in w]


def log_softmax(z: Sequence[float]) -> list[float]:
    m = max(z)
    log_total = math.log(math.fsum(math.exp(x - m) for x in z))
    return [(x - m) - log_total for x in z]


def _ints(tokens: Any) -> list[int]:
    """Token ids as a list of Python ints (a LongTensor is accepted too)."""
    return [int(t) for t in (tokens.tolist() if hasattr(tokens, "tolist") else tokens)]


def _check_tokens(tokens: Iterable[int], vocab: int, what: str) -> None:
    bad = [t for t in tokens if not 0 <= t < vocab]
    if bad:
        raise SamplingError(f"{what} contain ids outside [0, {vocab}): {bad[:5]}")


# ---- the steps ----------------------------------------------------------------------------------


def constrain(z: list[float], allowed: Sequence[bool] | None) -> list[float]:
    """S0: tokens the grammar forbids get -inf (raw logprobs are taken after this)."""
    if allowed is None:
        return z
    mask = allowed.tolist() if hasattr(allowed, "tolist") else list(allowed)
    if len(mask) != len(z):
        raise SamplingError(f"allowed mask has {len(mask)} entries for {len(z)} logits")
    return [x if ok else NEG_INF for x, ok in zip(z, mask, strict=True)]


def bias(z: list[float], logit_bias: Mapping[int, float]) -> list[float]:
    """S1: z_i += logit_bias[i] (a -inf stays -inf: bias cannot undo S0)."""
    out = list(z)
    for i, b in logit_bias.items():
        out[i] += b
    return out


def repetition(z: list[float], penalty: float, seen: Iterable[int]) -> list[float]:
    """S2: once per distinct token of prompt + output: divide positive logits, multiply the rest."""
    out = list(z)
    for i in set(seen):
        out[i] = out[i] / penalty if out[i] > 0 else out[i] * penalty
    return out


def presence_frequency(
    z: list[float], output_tokens: Sequence[int], presence: float, frequency: float
) -> list[float]:
    """S3: OpenAI's formula over the generated tokens only: z_i -= c_i * freq + (c_i > 0) * pres."""
    out = list(z)
    for i, count in Counter(output_tokens).items():
        out[i] -= count * frequency + presence  # count >= 1 here, so (c_i > 0) is 1
    return out


def greedy(z: Sequence[float]) -> int:
    """S4: the rank-0 token (highest logit, lowest id among ties)."""
    return max(range(len(z)), key=lambda i: (z[i], -i))


def temperature(z: list[float], t: float) -> list[float]:
    """S5: (z - max z) / T. Shifting first keeps every finite value finite-or-exact for tiny T."""
    m = max(z)
    return [(x - m) / t for x in z]


def min_p(z: list[float], m: float) -> list[float]:
    """S6: drop z_i < ln(m), i.e. p_i < m * p_max (max z is 0 after S5); ties with the cut stay."""
    cut = math.log(m)
    return [x if x >= cut else NEG_INF for x in z]


def top_k(z: list[float], k: int) -> list[float]:
    """S7: keep exactly the k first tokens in rank order (ties at the cut: lower ids win)."""
    finite = sum(x > NEG_INF for x in z)
    if not 0 < k < finite:
        return z
    keep = set(rank_order(z)[:k])
    return [x if i in keep else NEG_INF for i, x in enumerate(z)]


def top_p(z: list[float], p: float) -> list[float]:
    """S8: walk the rank order; keep rank 0, then rank r while the mass of ranks < r is < p."""
    q = softmax(z)
    keep: set[int] = set()
    mass = 0.0
    for r, i in enumerate(rank_order(z)):
        if r > 0 and not mass < p:
            break
        keep.add(i)
        mass += q[i]
    return [x if i in keep else NEG_INF for i, x in enumerate(z)]


def draw(z: Sequence[float], u: float) -> int:
    """S9: the smallest id whose running weight (ascending ids) exceeds u * total weight."""
    m = max(z)
    w = [math.exp(x - m) for x in z]
    running = list(accumulate(w))
    threshold = u * running[-1]
    for i, c in enumerate(running):
        if c > threshold:
            return i
    # u * total rounded up to total (u within 2**-53 of 1): the last token that has weight.
    return max(i for i, x in enumerate(w) if x > 0)


# ---- the pipeline -------------------------------------------------------------------------------


def pipeline(
    logits: Any,
    params: SamplingParams,
    prompt_tokens: Sequence[int],
    output_tokens: Sequence[int],
    allowed: Sequence[bool] | None = None,
) -> list[tuple[str, list[float]]]:
    """Every stage's logits, in order: raw (S0), bias, repetition, presence_frequency, then, unless
    greedy, temperature, min_p, top_k, top_p. Disabled steps are skipped (their entry repeats the
    previous logits): evaluating an "off" top_p could drop tokens through float rounding."""
    z = constrain(as_floats(logits), allowed)  # S0
    vocab = len(z)
    params.check_vocab(vocab)
    prompt_tokens, output_tokens = _ints(prompt_tokens), _ints(output_tokens)
    # History ids are checked where they are used (as the batched sampler does: converting a long
    # prompt every step only to check it would cost more than the step).
    if params.repetition_penalty != 1:
        _check_tokens(prompt_tokens, vocab, "prompt tokens")
    if params.repetition_penalty != 1 or params.presence_penalty or params.frequency_penalty:
        _check_tokens(output_tokens, vocab, "output tokens")
    if max(z) == NEG_INF:
        raise SamplingError("the allowed mask forbids every token")
    stages = [("raw", z)]

    def stage(name: str, enabled: bool, step: Any, *args: Any) -> None:
        previous = stages[-1][1]
        stages.append((name, step(previous, *args) if enabled else previous))

    stage("bias", bool(params.logit_bias), bias, params.logit_bias)  # S1
    r = params.repetition_penalty
    stage("repetition", r != 1, repetition, r, prompt_tokens + output_tokens)  # S2
    pres, freq = params.presence_penalty, params.frequency_penalty
    stage("presence_frequency", pres != 0 or freq != 0, presence_frequency, output_tokens, pres, freq)  # S3
    if max(stages[-1][1]) == NEG_INF:
        raise SamplingError("every token has logit -inf after the penalties; nothing to sample")
    if max(stages[-1][1]) == math.inf:  # only a repetition_penalty below ~1e-300 can overflow
        raise SamplingError("a logit overflowed to +inf in S2 (repetition_penalty too small)")
    if params.greedy:  # S4: S5..S9 are skipped
        return stages
    stage("temperature", True, temperature, params.temperature)  # S5
    stage("min_p", params.min_p > 0, min_p, params.min_p)  # S6
    stage("top_k", params.top_k > 0, top_k, params.top_k)  # S7
    stage("top_p", params.top_p < 1, top_p, params.top_p)  # S8
    return stages


def distribution(
    logits: Any,
    params: SamplingParams,
    prompt_tokens: Sequence[int],
    output_tokens: Sequence[int],
    allowed: Sequence[bool] | None = None,
) -> list[float]:
    """The exact final distribution: softmax after S8, or one-hot on the S4 token when greedy."""
    final = pipeline(logits, params, prompt_tokens, output_tokens, allowed)[-1][1]
    if params.greedy:
        one_hot = [0.0] * len(final)
        one_hot[greedy(final)] = 1.0
        return one_hot
    return softmax(final)


def raw_logprobs(logits: Any, allowed: Sequence[bool] | None = None) -> list[float]:
    """S0's log_softmax: after the grammar mask, before every sampling knob."""
    z = constrain(as_floats(logits), allowed)
    if max(z) == NEG_INF:
        raise SamplingError("the allowed mask forbids every token")
    return log_softmax(z)


def top_entries(logprobs: Sequence[float], n: int) -> list[tuple[int, float]]:
    """The n best (id, logprob) by logprob descending, ties lower id first; -inf never listed."""
    finite = (i for i, x in enumerate(logprobs) if x > NEG_INF)
    return [(i, logprobs[i]) for i in heapq.nsmallest(n, finite, key=lambda i: (-logprobs[i], i))]


def sample(
    logits: Any,
    params: SamplingParams,
    prompt_tokens: Sequence[int],
    output_tokens: Sequence[int],
    step: int = 0,
    choice: int = 0,
    seed: int | None = None,
    allowed: Sequence[bool] | None = None,
) -> SampleResult:
    """One token for (seed, choice, step). `seed` defaults to params.seed; one of them must be set
    (also when greedy: the generation loop always resolves a seed, and a missing one is a bug)."""
    seed = params.seed if seed is None else seed
    if seed is None:
        raise SamplingError("no seed: pass seed= or set params.seed")
    u = uniform(seed, choice, step)  # the step's draw; unused (but still "consumed") when greedy
    stages = pipeline(logits, params, prompt_tokens, output_tokens, allowed)
    final = stages[-1][1]
    token = greedy(final) if params.greedy else draw(final, u)
    # processed = log_softmax of the final logits: after S8, or after S3 when greedy (the spec).
    logprobs = log_softmax(stages[0][1] if params.logprobs_mode == "raw" else final)
    return SampleResult(token, logprobs[token], top_entries(logprobs, params.top_logprobs))
