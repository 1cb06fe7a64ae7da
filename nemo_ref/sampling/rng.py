"""Counter-based randomness: U(seed, choice, step) is a pure function (docs/sampling.md, "Randomness").

There is no generator state to advance, so a draw cannot depend on what else was in the batch, on
whether logprobs were requested, or on how many draws an earlier greedy or forced step "used": the
token at step s of choice c is a function of the seed, c, s and the logits only. SHA-256 is slow next
to a PRNG, but it is computed once per row per step (microseconds) and is the same on every machine,
language and accelerator, which is what makes a completion reproducible from its reported seed.
"""

from __future__ import annotations

import hashlib
import numbers
import os

DOMAIN = b"nemo-ref-sampler-v1"
_U32 = 2**32


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def uniform(seed: int, choice: int, step: int) -> float:
    """The draw for (seed, choice, step): a float in [0, 1) on the 2**-53 grid.

    SHA-256(DOMAIN + seed as 8 bytes LE two's complement + choice as 4 bytes LE + step as 4 bytes
    LE); the first 8 bytes read big-endian, shifted right by 11 (53 bits left), times 2**-53.
    """
    for name, value in (("choice", choice), ("step", step)):
        if not _is_int(value) or not 0 <= value < _U32:
            raise ValueError(f"{name} must be an integer in [0, 2**32); got {value!r}")
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    seed, choice, step = int(seed), int(choice), int(step)  # numpy / torch integers too
    try:
        seed_bytes = seed.to_bytes(8, "little", signed=True)
    except OverflowError:
        raise ValueError(f"seed must be a 64-bit integer; got {seed!r}") from None
    message = DOMAIN + seed_bytes + choice.to_bytes(4, "little") + step.to_bytes(4, "little")
    word = int.from_bytes(hashlib.sha256(message).digest()[:8], "big")
    return (word >> 11) * 2.0**-53


def random_seed() -> int:
    """A fresh seed from the OS for a request without one (63 bits, non-negative: JSON-friendly)."""
    return int.from_bytes(os.urandom(8), "little") >> 1
