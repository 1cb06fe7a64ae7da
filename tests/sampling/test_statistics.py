"""20,000 seeded draws per configuration from the batched sampler follow reference.distribution():
a chi-square goodness-of-fit test (scipy) with p > 1e-4, and not one draw outside the kept set."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from scipy import stats

from nemo_ref.sampling import reference as ref
from nemo_ref.sampling.batched import SampleRow, sample_batch
from nemo_ref.sampling.params import SamplingParams

DRAWS = 20_000
BATCH = 2_500
LOGITS = [1.2, 0.3, -0.5, 2.0, 0.0, 1.2, -1.5, 0.8, 0.3, -0.2, 1.7, -3.0]  # ties: 0/5, 1/8
MASK = [True] * 12
MASK[3] = MASK[9] = False
PROMPT, OUTPUT = [1, 1, 4, 7], [3, 10, 10, 0]

CONFIGS = {
    "plain": (SamplingParams(), None),
    "cold, top_k 5": (SamplingParams(temperature=0.6, top_k=5), None),
    "top_p 0.8 and min_p 0.05": (SamplingParams(top_p=0.8, min_p=0.05), None),
    "hot with penalties": (
        SamplingParams(temperature=1.9, repetition_penalty=1.5, presence_penalty=-0.5), None
    ),
    "every knob": (
        SamplingParams(
            temperature=1.3, top_p=0.95, top_k=8, min_p=0.02, repetition_penalty=1.3,
            presence_penalty=0.4, frequency_penalty=0.3, logit_bias={6: 2.5, 2: -1.0},
            logprobs=True, top_logprobs=3, logprobs_mode="processed",
        ),
        MASK,
    ),
}  # fmt: skip


def draw_many(params: SamplingParams, allowed, seed: int = 2024) -> Counter:
    mask = None if allowed is None else torch.tensor(allowed)
    counts: Counter = Counter()
    logits = torch.tensor([LOGITS], dtype=torch.float64).expand(BATCH, -1)
    for start in range(0, DRAWS, BATCH):
        rows = [
            SampleRow(params, seed, choice=0, step=s, prompt_tokens=PROMPT, output_tokens=OUTPUT,
                      allowed=mask)
            for s in range(start, start + BATCH)
        ]  # fmt: skip
        counts.update(r.token for r in sample_batch(logits, rows))
    return counts


@pytest.mark.parametrize("name", list(CONFIGS))
def test_draws_follow_the_distribution(name):
    params, allowed = CONFIGS[name]
    probs = ref.distribution(LOGITS, params, PROMPT, OUTPUT, allowed)
    kept = [i for i, q in enumerate(probs) if q > 0]
    assert len(kept) >= 2 and min(DRAWS * probs[i] for i in kept) >= 5  # chi-square is valid
    counts = draw_many(params, allowed)
    assert set(counts) <= set(kept), f"drawn outside the kept set: {set(counts) - set(kept)}"
    observed = [counts[i] for i in kept]
    expected = [DRAWS * probs[i] for i in kept]
    expected[-1] += DRAWS - math.fsum(expected)  # exact totals for scipy's sum check
    assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_the_test_can_fail():
    # Draws at T = 1 judged against the T = 0.9 distribution must be rejected (power check).
    params, _ = CONFIGS["plain"]
    counts = draw_many(params, None)
    wrong = ref.distribution(LOGITS, SamplingParams(temperature=0.9), [], [])
    observed = [counts[i] for i in range(len(LOGITS))]
    expected = [DRAWS * q for q in wrong]
    expected[-1] += DRAWS - math.fsum(expected)
    assert stats.chisquare(observed, expected).pvalue < 1e-4


def test_greedy_draws_only_the_argmax():
    counts = draw_many(SamplingParams(temperature=0), None)
    assert set(counts) == {3}
