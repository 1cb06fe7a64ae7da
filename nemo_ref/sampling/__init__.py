"""The sampler: SamplingParams, counter-based randomness, the pure-Python reference, batched torch.

`nemo_ref.sampling.batched` (torch) and `nemo_ref.sampling.explain` are imported on demand; this
package itself imports no torch, so the reference can be read and run with the standard library.
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
