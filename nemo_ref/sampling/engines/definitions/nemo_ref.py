"""nemo_ref: the spec of docs/sampling.md, as the emulations see it, and its seeded draw."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...rng import uniform
from ..fields import in_range, use
from ..spec import Cited, EngineSpec


def nemo_ref_draw(z: np.ndarray, knobs: Mapping[str, Any], output: np.ndarray, seed: int) -> int:
    """docs/sampling.md S9: u = U(seed, 0, step); the smallest id whose running weight (ascending
    ids) exceeds u * total. Choice 0; the step is the number of tokens generated so far."""
    u = uniform(seed, 0, int(output.size))
    running = np.cumsum(np.exp(z - z.max()))
    i = int(np.searchsorted(running, u * running[-1], side="right"))
    return i if i < z.size else int(np.flatnonzero(np.isfinite(z))[-1])


NR = "docs/sampling.md"
NR_PARAMS = "nemo_ref/sampling/params.py"
NR_RANGE = "{knob} must be a number in {interval}"
ORDER = ("logit_bias", "repetition", "presence_frequency", "greedy", "temperature", "min_p", "top_k", "top_p")

NEMO_REF = EngineSpec(
    name="nemo_ref",
    version="nemo_ref 0.1.0",
    order=Cited(ORDER, NR + " (S1..S8)"),
    defaults=Cited({}, NR_PARAMS),
    fields={
        "temperature": in_range("temperature", NR_PARAMS, "[0, 2]", NR_RANGE),
        "top_p": in_range("top_p", NR_PARAMS, "[0, 1]", NR_RANGE),
        "top_k": use(
            "top_k", NR_PARAMS, -1, kind="int", answer="top_k must be an integer >= 0 (or -1 for off)"
        ),
        "min_p": in_range("min_p", NR_PARAMS, "[0, 1]", NR_RANGE),
        "repetition_penalty": in_range("repetition_penalty", NR_PARAMS, "(0, 2]", NR_RANGE),
        "presence_penalty": in_range("presence_penalty", NR_PARAMS, "[-2, 2]", NR_RANGE),
        "frequency_penalty": in_range("frequency_penalty", NR_PARAMS, "[-2, 2]", NR_RANGE),
        "logit_bias": in_range(
            "logit_bias", NR_PARAMS, "[-100, 100]", "values must lie in {interval}", kind="bias"
        ),
    },
    repetition_sign=Cited("positive_divides", NR + " S2"),
    repetition_scope=Cited("prompt+output", NR + " S2"),
    penalty_scope=Cited("output", NR + " S3"),
    frequency_formula=Cited("openai", NR + " S3"),
    top_k_ties=Cited("exactly_k", NR + " S7"),
    top_p_boundary=Cited("lt", NR + " S8"),
    zero_temperature=Cited("greedy", NR + " S4"),
    min_temperature=Cited(None, NR + " S5"),
    logprobs_mode=Cited("raw", NR + " Logprobs"),
    seeding=Cited(
        "counter-based: U(seed, choice, step) = SHA-256, batch-independent", "nemo_ref/sampling/rng.py"
    ),
    draw=nemo_ref_draw,
)
