"""transformers' logits processors for a `SamplingParams`, in a chosen order: the oracle chain.

The parity tests (tests/sampling/test_oracle.py) compare the reference with this chain in the
spec's order, and docs/sampling.md's "others" column with it in other engines' orders;
scripts/bench_sampler.py times it in transformers' own order. transformers has no processor for
OpenAI's presence/frequency formula, so `OpenAIPenalties` writes that one out. transformers is
imported when a chain is built (it is a test and benchmark dependency, not the package's).
"""

from __future__ import annotations

import torch

from .params import SamplingParams

STEPS = ("bias", "repetition", "presence_frequency", "temperature", "min_p", "top_k", "top_p")
SPEC_ORDER = STEPS  # docs/sampling.md's S1..S8
TRANSFORMERS_ORDER = ("bias", "repetition", "presence_frequency", "temperature", "top_k", "top_p", "min_p")


class OpenAIPenalties:
    """OpenAI's documented presence/frequency formula (API reference, "Parameter details"):
    mu[j] -> mu[j] - c[j] * alpha_frequency - float(c[j] > 0) * alpha_presence, c over the output."""

    def __init__(self, presence: float, frequency: float, output_ids: torch.Tensor):
        self.presence, self.frequency, self.output_ids = presence, frequency, output_ids  # ids [B, G]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(self.output_ids, dtype=scores.dtype)
        counts = torch.zeros_like(scores).scatter_add_(1, self.output_ids, ones)  # [B, V]
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


def processors(params: SamplingParams, output_ids: torch.Tensor, order: tuple[str, ...] = SPEC_ORDER) -> list:
    """transformers' processors for the knobs of ``params`` that are on, in ``order`` (names from
    ``STEPS``). ``output_ids``: [B, G], the output so far (what the OpenAI penalties count)."""
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        SequenceBiasLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    make = {
        "bias": lambda: SequenceBiasLogitsProcessor([[[i], b] for i, b in params.logit_bias.items()]),
        "repetition": lambda: RepetitionPenaltyLogitsProcessor(params.repetition_penalty),
        "presence_frequency": lambda: OpenAIPenalties(
            params.presence_penalty, params.frequency_penalty, output_ids
        ),
        "temperature": lambda: TemperatureLogitsWarper(params.temperature),
        "min_p": lambda: MinPLogitsWarper(params.min_p),
        "top_k": lambda: TopKLogitsWarper(params.top_k),
        "top_p": lambda: TopPLogitsWarper(params.top_p),
    }
    on = {
        "bias": bool(params.logit_bias),
        "repetition": params.repetition_penalty != 1,
        "presence_frequency": params.presence_penalty != 0 or params.frequency_penalty != 0,
        "temperature": params.temperature != 1,
        "min_p": params.min_p > 0,
        "top_k": params.top_k > 0,
        "top_p": params.top_p < 1,
    }
    unknown = [name for name in order if name not in make]
    if unknown:
        raise ValueError(f"order names unknown steps {unknown}; the steps are {STEPS}")
    return [make[name]() for name in order if on[name]]


__all__ = ["SPEC_ORDER", "STEPS", "TRANSFORMERS_ORDER", "OpenAIPenalties", "processors"]
