"""The counter-based draw U(seed, choice, step): test vectors computed here with hashlib/struct from
the spec's wording (not through rng.py), plus range, grid and uniformity properties."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from nemo_ref.sampling.rng import random_seed, uniform

SEEDS = st.integers(-(2**63), 2**63 - 1)
U32 = st.integers(0, 2**32 - 1)


def spec_uniform(seed: int, choice: int, step: int) -> float:
    """The spec, spelled with struct: '<q' is 8-byte LE two's complement, '<I' 4-byte LE unsigned,
    '>Q' the first 8 digest bytes big-endian."""
    digest = hashlib.sha256(
        b"nemo-ref-sampler-v1" + struct.pack("<q", seed) + struct.pack("<II", choice, step)
    ).digest()
    (word,) = struct.unpack(">Q", digest[:8])
    return (word >> 11) / 2**53


@pytest.mark.parametrize(
    "seed, choice, step",
    [(0, 0, 0), (42, 0, 0), (42, 0, 1), (42, 1, 0), (-1, 0, 0), (2**63 - 1, 2**32 - 1, 2**32 - 1)],
)
def test_vectors(seed, choice, step):
    assert uniform(seed, choice, step) == spec_uniform(seed, choice, step)


def test_a_vector_spelled_out_by_hand():
    # seed 7, choice 0, step 0: the message bytes written out literally.
    message = b"nemo-ref-sampler-v1" + bytes([7, 0, 0, 0, 0, 0, 0, 0]) + bytes(8)
    top = hashlib.sha256(message).hexdigest()[:16]  # first 8 bytes, big-endian hex
    assert uniform(7, 0, 0) == (int(top, 16) >> 11) * 2.0**-53


def test_negative_seed_is_twos_complement():
    # -1 as 8 bytes LE two's complement is ff*8: the same message as the unsigned 2**64 - 1.
    message = b"nemo-ref-sampler-v1" + b"\xff" * 8 + bytes(8)
    word = int.from_bytes(hashlib.sha256(message).digest()[:8], "big")
    assert uniform(-1, 0, 0) == (word >> 11) * 2.0**-53
    assert uniform(-(2**63), 0, 0) == spec_uniform(-(2**63), 0, 0)


@settings(max_examples=200, deadline=None)
@given(SEEDS, U32, U32)
def test_matches_spec_in_range_and_on_the_53_bit_grid(seed, choice, step):
    u = uniform(seed, choice, step)
    assert u == spec_uniform(seed, choice, step)
    assert 0.0 <= u < 1.0
    assert (u * 2**53).is_integer()


@pytest.mark.parametrize(
    "args", [(2**63, 0, 0), (-(2**63) - 1, 0, 0), (0, -1, 0), (0, 0, 2**32), (0.5, 0, 0), (True, 0, 0)]
)
def test_out_of_range_arguments_raise(args):
    with pytest.raises(ValueError):
        uniform(*args)


def test_uniformity_and_independence_of_neighbouring_counters():
    n = 20_000
    us = [uniform(123, 0, s) for s in range(n)]
    assert stats.kstest(us, "uniform").pvalue > 1e-4
    # consecutive steps and neighbouring choices are uncorrelated
    assert abs(stats.pearsonr(us[:-1], us[1:]).statistic) < 0.04
    vs = [uniform(123, 1, s) for s in range(n)]
    assert abs(stats.pearsonr(us, vs).statistic) < 0.04


def test_random_seed_is_a_valid_nonnegative_64_bit_seed():
    seeds = {random_seed() for _ in range(50)}
    assert len(seeds) == 50
    assert all(0 <= s < 2**63 for s in seeds)
    uniform(max(seeds), 0, 0)


def test_the_vectors_published_in_docs_sampling_md():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "sampling.md").read_text()
    section = doc.split("## Randomness")[1].split("## Logprobs")[0]
    rows = re.findall(r"^\| (-?\d+) \| (\d+) \| (\d+) \| ([0-9.]+) \|$", section, re.MULTILINE)
    assert len(rows) >= 5
    for seed, choice, step, value in rows:
        assert spec_uniform(int(seed), int(choice), int(step)) == float(value)
