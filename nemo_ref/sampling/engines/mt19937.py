"""llama.cpp's draw: `std::mt19937(seed)` and `std::uniform_real_distribution<double>(0, 1)`.

The dist sampler (src/llama-sampler.cpp, `llama_sampler_dist_apply`) draws one double per sampled
token. libstdc++ builds that double with `std::generate_canonical<double, 53>`: two 32-bit outputs
x1, x2 of the Mersenne Twister, (x1 + x2 * 2**32) / 2**64 in double arithmetic, and a result that
rounds up to 1.0 is replaced by the largest double below 1. The twister itself is MT19937 as
published (Matsumoto & Nishimura 1998) with the standard `init_genrand` seeding, which is what
`std::mt19937(seed)` does. Written out here (a few dozen lines) rather than borrowed from numpy's
legacy seeding, so it can be read; tests/engines/test_llama_cpp.py checks it against the real
llama.cpp sampler.
"""

from __future__ import annotations

import math

_N, _M = 624, 397
_MATRIX_A, _UPPER, _LOWER = 0x9908B0DF, 0x80000000, 0x7FFFFFFF
_MASK32 = 0xFFFFFFFF


def mt19937_words(seed: int, count: int) -> list[int]:
    """The first `count` 32-bit outputs of std::mt19937(seed) (seed taken modulo 2**32)."""
    state = [seed & _MASK32]
    for i in range(1, _N):
        prev = state[-1]
        state.append((1812433253 * (prev ^ (prev >> 30)) + i) & _MASK32)
    out: list[int] = []
    index = _N
    while len(out) < count:
        if index >= _N:  # regenerate the whole state ("twist")
            for i in range(_N):
                y = (state[i] & _UPPER) | (state[(i + 1) % _N] & _LOWER)
                state[i] = state[(i + _M) % _N] ^ (y >> 1) ^ (_MATRIX_A if y & 1 else 0)
            index = 0
        y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        out.append(y)
    return out


def uniform_doubles(seed: int, count: int) -> list[float]:
    """The first `count` values of uniform_real_distribution<double>(0, 1) on std::mt19937(seed)."""
    words = mt19937_words(seed, 2 * count)
    out = []
    for x1, x2 in zip(words[0::2], words[1::2], strict=True):
        u = (float(x1) + float(x2) * 4294967296.0) / 18446744073709551616.0
        out.append(u if u < 1.0 else math.nextafter(1.0, 0.0))
    return out
