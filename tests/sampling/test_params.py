"""SamplingParams validation: every ill-typed or out-of-range value is a ParamError that names the
parameter and states its valid range (docs/sampling.md, "Valid values"). The expected range texts
are written here by hand from the spec's table, not read from the code."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_ref.sampling.params import ParamError, SamplingParams

FAST = settings(max_examples=40, deadline=None)

# parameter -> (text that must appear in the message, strategy of invalid values)
NOT_A_NUMBER = st.sampled_from(["0.5", None, True, False, [0.5], {"x": 1}, b"1", 1j])
NOT_AN_INT = st.sampled_from(["3", None, True, False, 3.0, 2.5, [3], float("nan")])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def floats_outside(lo: float, hi: float, lo_open: bool = False) -> st.SearchStrategy:
    below = st.floats(max_value=lo, exclude_max=not lo_open, allow_nan=False)
    above = st.floats(min_value=hi, exclude_min=True, allow_nan=False)
    too_big_int = st.sampled_from([10**400, -(10**400)])
    return st.one_of(below, above, NON_FINITE, NOT_A_NUMBER, too_big_int)


INVALID = {
    "temperature": ("[0, 2]", floats_outside(0, 2)),
    "top_p": ("[0, 1]", floats_outside(0, 1)),
    "min_p": ("[0, 1]", floats_outside(0, 1)),
    "repetition_penalty": ("(0, 2]", floats_outside(0, 2, lo_open=True)),
    "presence_penalty": ("[-2, 2]", floats_outside(-2, 2)),
    "frequency_penalty": ("[-2, 2]", floats_outside(-2, 2)),
    "top_k": (">= 0 (or -1", st.one_of(st.integers(max_value=-2), NOT_AN_INT)),
    "top_logprobs": ("[0, 20]", st.one_of(st.integers(max_value=-1), st.integers(21), NOT_AN_INT)),
    "n": ("[1, 128]", st.one_of(st.integers(max_value=0), st.integers(129), NOT_AN_INT)),
    "seed": (
        "[-2**63, 2**63 - 1]",
        st.one_of(
            st.integers(max_value=-(2**63) - 1),
            st.integers(min_value=2**63),
            st.sampled_from(["7", True, 7.0]),
        ),
    ),
    "max_tokens": (">= 1", st.one_of(st.integers(max_value=0), st.sampled_from([True, 5.0, "5"]))),
    "max_completion_tokens": (">= 1", st.one_of(st.integers(max_value=0), st.just(False))),
    "logprobs": ("a boolean", st.sampled_from([0, 1, "true", None, 1.0])),
    "logprobs_mode": ("'raw' or 'processed'", st.sampled_from(["RAW", "", None, 1, "logits"])),
    "stop": (
        "at most 4 non-empty strings",
        st.one_of(
            st.just(""),
            st.lists(st.text(min_size=1), min_size=5, max_size=8),
            st.lists(st.text(min_size=1), max_size=3).map(lambda xs: [*xs, ""]),
            st.sampled_from([["a", 1], [None], 5, {"a": 1}, b"stop", ["ok", b"x"]]),
        ),
    ),
    "logit_bias": (
        "[-100, 100]",
        st.one_of(
            st.sampled_from([[1, 2], "1:5", 5]),
            st.dictionaries(st.integers(0, 99), floats_outside(-100, 100), min_size=1, max_size=3),
            st.dictionaries(
                st.sampled_from(["abc", "1.5", "", -1, "-3", 1.5, True, None, (1,)]),
                st.just(1.0),
                min_size=1,
                max_size=1,
            ),
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_every_invalid_value_is_a_param_error_naming_the_parameter_and_range(name):
    valid_range, invalid = INVALID[name]

    @FAST
    @given(invalid)
    def check(value):
        with pytest.raises(ParamError) as e:
            SamplingParams(**{name: value})
        assert e.value.param == name
        assert name in str(e.value) and valid_range in str(e.value)
        assert isinstance(e.value, ValueError)

    check()


def test_top_logprobs_needs_logprobs():
    with pytest.raises(ParamError) as e:
        SamplingParams(top_logprobs=3)
    assert e.value.param == "top_logprobs" and "logprobs" in str(e.value)
    assert SamplingParams(top_logprobs=3, logprobs=True).top_logprobs == 3


def test_duplicate_logit_bias_key_after_normalisation():
    with pytest.raises(ParamError) as e:
        SamplingParams(logit_bias={1: 1.0, "1": 2.0})
    assert e.value.param == "logit_bias"


@pytest.mark.parametrize(
    "name, edges",
    [
        ("temperature", [0, 0.0, 2, 2.0, 1e-300]),
        ("top_p", [0, 1, 0.5]),
        ("min_p", [0, 1.0]),
        ("repetition_penalty", [5e-324, 2.0, 1]),
        ("presence_penalty", [-2, 2.0, 0]),
        ("frequency_penalty", [-2.0, 2]),
        ("top_k", [-1, 0, 1, 131072, 10**6]),
        ("top_logprobs", [0]),
        ("n", [1, 128]),
        ("seed", [None, -(2**63), 2**63 - 1, 0]),
        ("max_tokens", [None, 1, 10**9]),
        ("max_completion_tokens", [None, 1]),
        ("logprobs_mode", ["raw", "processed"]),
    ],
)
def test_edges_of_every_range_are_valid(name, edges):
    for value in edges:
        assert getattr(SamplingParams(**{name: value}), name) == value


def test_normalisation():
    p = SamplingParams(temperature=1, top_p=0, logit_bias={"42": 5, " 7 ": -1.5, 3: 100})
    assert p.temperature == 1.0 and isinstance(p.temperature, float)
    assert isinstance(p.top_p, float)
    assert p.logit_bias == {3: 100.0, 7: -1.5, 42: 5.0}
    assert all(type(k) is int and type(v) is float for k, v in p.logit_bias.items())
    assert SamplingParams(stop="###").stop == ("###",)
    assert SamplingParams(stop=["a", "b", "c", "d"]).stop == ("a", "b", "c", "d")
    assert SamplingParams(stop=None).stop == () and SamplingParams(logit_bias=None).logit_bias == {}
    assert SamplingParams(top_logprobs=20, logprobs=True).top_logprobs == 20


def test_defaults_are_the_off_values():
    p = SamplingParams()
    assert (p.temperature, p.top_p, p.top_k, p.min_p) == (1.0, 1.0, 0, 0.0)
    assert (p.repetition_penalty, p.presence_penalty, p.frequency_penalty) == (1.0, 0.0, 0.0)
    assert (p.logit_bias, p.logprobs, p.top_logprobs, p.seed, p.stop) == ({}, False, 0, None, ())
    assert (p.max_tokens, p.max_completion_tokens, p.n, p.logprobs_mode) == (None, None, 1, "raw")


def test_properties_and_frozen():
    assert SamplingParams(max_tokens=5).max_new_tokens == 5
    assert SamplingParams(max_tokens=5, max_completion_tokens=9).max_new_tokens == 9
    assert SamplingParams().max_new_tokens is None
    assert SamplingParams(temperature=0).greedy and not SamplingParams(temperature=1e-9).greedy
    p = SamplingParams(logit_bias={1: 2.0}, stop=["x"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature = 0.5  # type: ignore[misc]
    assert hash(p) == hash(SamplingParams(logit_bias={"1": 2}, stop="x"))
    assert p == SamplingParams(logit_bias={"1": 2}, stop="x")
    assert p != SamplingParams(logit_bias={1: 3.0}, stop="x")


def test_check_vocab():
    p = SamplingParams(logit_bias={0: 1.0, 9: -1.0})
    p.check_vocab(10)
    with pytest.raises(ParamError) as e:
        p.check_vocab(9)
    assert e.value.param == "logit_bias" and "[0, 9)" in str(e.value)
