"""The sampler: SamplingParams, counter-based randomness, the pure-Python reference, batched torch.

The torch modules are imported on demand: `metadata` (one decode step's rows as columns),
`batched` (the torch backend), `sampler` (the one call and its two backends, torch and Triton) and
`explain`; this package itself imports no torch, so the reference can be read and run with the
standard library.
"""

from .params import ParamError, SamplingParams
from .reference import SampleResult, SamplingError
from .rng import random_seed, uniform

__all__ = [
    "ParamError",
    "SampleResult",
    "SamplingError",
    "SamplingParams",
    "random_seed",
    "uniform",
]
