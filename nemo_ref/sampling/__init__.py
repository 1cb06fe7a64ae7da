"""The sampler: SamplingParams, counter-based randomness, the pure-Python reference, batched torch."""
