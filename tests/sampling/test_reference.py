"""The reference sampler against hand-derived values: the spec's worked examples, closed forms,
penalties on a small vector, logprobs (raw and processed), top_logprobs order and the S0 mask.
Every expected value here is written out by hand or computed with `math` in the test itself."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_ref.sampling import reference as ref
from nemo_ref.sampling.params import ParamError, SamplingParams

P = SamplingParams
FAST = settings(max_examples=60, deadline=None)


def kept(probs) -> set[int]:
    return {i for i, q in enumerate(probs) if q > 0}


def by_hand_softmax(z) -> list[float]:
    m = max(z)
    w = [math.exp(x - m) for x in z]
    return [x / math.fsum(w) for x in w]


def dist(logits, prompt=(), output=(), allowed=None, **knobs) -> list[float]:
    return ref.distribution(logits, P(**knobs), list(prompt), list(output), allowed)


# ---- the spec's worked examples (nemo_ref's column) ---------------------------------------------


def test_example_top_p_after_temperature():
    # T 0.5: z = [6, 4, 2]; q0 = 1 / (1 + e^-2 + e^-4) = 0.867 >= 0.8, so rank 1 fails.
    assert kept(dist([3.0, 2.0, 1.0], top_p=0.8, temperature=0.5)) == {0}


def test_example_min_p_after_temperature():
    # T 2: z = [1.5, 0.5, 0]; p_i / p_max = 1, e^-1 = 0.37, e^-1.5 = 0.22, all >= 0.2.
    assert kept(dist([3.0, 1.0, 0.0], min_p=0.2, temperature=2.0)) == {0, 1, 2}


def test_example_min_p_before_top_p():
    # min_p 0.2 * 0.5 = 0.1 drops .05; renormalised .526, .316, .158; mass before rank 2 is
    # .842 >= .82, so rank 2 goes: {0, 1} (the HF order top_p -> min_p would keep {0, 1, 2}).
    logits = [math.log(x) for x in (0.5, 0.3, 0.15, 0.05)]
    probs = dist(logits, top_p=0.82, min_p=0.2)
    assert kept(probs) == {0, 1}
    assert probs[0] == pytest.approx(0.5 / 0.8) and probs[1] == pytest.approx(0.3 / 0.8)


def test_example_top_k_ties_lowest_id_exactly_k():
    probs = dist([2.0, 1.0, 1.0, 0.0], top_k=2)
    assert kept(probs) == {0, 1}
    assert probs[0] == pytest.approx(math.e / (math.e + 1))


def test_example_repetition_on_positive_negative_and_zero():
    stages = dict(ref.pipeline([2.0, -2.0, 0.0], P(repetition_penalty=1.3), [0, 1, 2], []))
    assert stages["repetition"] == [2.0 / 1.3, -2.6, 0.0]
    assert stages["repetition"][0] == pytest.approx(1.5384615384615383)


# ---- penalties on a small vector, by hand ------------------------------------------------------

# id:        0      1     2     3     4     5     6
LOGITS = [2.0, -1.0, 0.0, 3.0, -2.0, 1.0, -3.0]
PROMPT = [0, 1, 6, 0]  # 0 twice in the prompt: still penalised once
OUTPUT = [2, 3, 3, 4, 6, 6]
# r = 2, presence 0.5, frequency 0.25:
#   0 prompt only, positive:   2 / 2                  = 1.0
#   1 prompt only, negative:  -1 * 2                  = -2.0
#   2 output once, zero:       0 * 2 - (0.25 + 0.5)   = -0.75
#   3 output twice, positive:  3 / 2 - (0.5 + 0.5)    = 0.5
#   4 output once, negative:  -2 * 2 - 0.75           = -4.75
#   5 unseen:                                           1.0
#   6 prompt + output twice:  -3 * 2 - 1.0            = -7.0
PENALISED = [1.0, -2.0, -0.75, 0.5, -4.75, 1.0, -7.0]
KNOBS = {"repetition_penalty": 2.0, "presence_penalty": 0.5, "frequency_penalty": 0.25}


def test_penalties_by_hand():
    stages = dict(ref.pipeline(LOGITS, P(**KNOBS), PROMPT, OUTPUT))
    assert stages["repetition"] == [1.0, -2.0, 0.0, 1.5, -4.0, 1.0, -6.0]
    assert stages["presence_frequency"] == PENALISED
    assert dist(LOGITS, PROMPT, OUTPUT, **KNOBS) == pytest.approx(by_hand_softmax(PENALISED))


def test_presence_and_frequency_ignore_the_prompt():
    stages = dict(ref.pipeline(LOGITS, P(presence_penalty=2, frequency_penalty=2), PROMPT, []))
    assert stages["presence_frequency"] == LOGITS


def test_negative_presence_and_frequency_encourage():
    stages = dict(ref.pipeline(LOGITS, P(presence_penalty=-1, frequency_penalty=-0.5), [], [5, 5]))
    assert stages["presence_frequency"][5] == 1.0 + 2 * 0.5 + 1


def test_bias_then_penalties_order():
    # S1 before S2: bias makes token 1's logit positive, so repetition divides it.
    stages = dict(ref.pipeline([0.0, -1.0], P(logit_bias={1: 3}, repetition_penalty=2), [1], []))
    assert stages["repetition"] == [0.0, 1.0]


# ---- closed forms ------------------------------------------------------------------------------

TIED_LOGITS = st.lists(st.integers(-4, 4).map(float), min_size=1, max_size=12)
SPREAD_LOGITS = st.lists(st.floats(-30, 30), min_size=1, max_size=12)
LOGITS_ST = st.one_of(TIED_LOGITS, SPREAD_LOGITS)


def argmax_lowest_id(z) -> int:
    return min(i for i, x in enumerate(z) if x == max(z))


@FAST
@given(LOGITS_ST, st.floats(0.05, 2))
def test_top_k_1_equals_greedy_equals_argmax(z, t):
    one_hot = [0.0] * len(z)
    one_hot[argmax_lowest_id(z)] = 1.0
    assert dist(z, temperature=0) == one_hot
    assert dist(z, top_k=1, temperature=t) == one_hot
    assert ref.sample(z, P(temperature=0), [], [], seed=1).token == argmax_lowest_id(z)


@FAST
@given(LOGITS_ST, st.floats(0.05, 2))
def test_top_p_0_keeps_only_the_rank_0_token(z, t):
    assert kept(dist(z, top_p=0.0, temperature=t)) == {argmax_lowest_id(z)}


@FAST
@given(LOGITS_ST)
def test_min_p_1_keeps_exactly_the_ties_of_the_max(z):
    probs = dist(z, min_p=1.0)
    ties = {i for i, x in enumerate(z) if x == max(z)}
    assert kept(probs) == ties
    assert all(probs[i] == pytest.approx(1 / len(ties)) for i in ties)


@FAST
@given(LOGITS_ST, st.lists(st.integers(0, 11), max_size=6))
def test_off_values_are_exact_no_ops(z, history):
    history = [t for t in history if t < len(z)]
    plain = by_hand_softmax(z)
    explicit_off = dict(
        temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0,
        presence_penalty=0.0, frequency_penalty=0.0, logit_bias={},
    )  # fmt: skip
    assert dist(z, history, history, **explicit_off) == plain
    assert dist(z, history, history, **{**explicit_off, "top_k": -1}) == plain
    assert dist(z, history, history, top_k=len(z)) == plain


def test_top_p_1_is_skipped_not_evaluated():
    # Ranks past the first hold ~1e-18 each: a float prefix sum reaches 1.0 after rank 0, so an
    # evaluated "keep while mass < 1" would drop them. Skipped, they keep their (tiny) mass.
    z = [0.0] + [-41.0] * 5
    probs = dist(z, top_p=1.0)
    assert kept(probs) == set(range(6))
    assert kept(dist(z, top_p=0.999999)) == {0}


@pytest.mark.parametrize("t", [1e-300, 1e-12, 1e-3])
def test_tiny_temperature_is_exact_not_clamped(t):
    # (z - max) / T: the second token's probability is exp(-0.5 / T); no clamping to 0.01.
    probs = dist([1.0, 0.5], temperature=t)
    assert probs[1] == pytest.approx(math.exp(-0.5 / t), abs=0, rel=1e-9)
    assert probs[0] == pytest.approx(1.0)


# ---- draws --------------------------------------------------------------------------------------


def test_draw_follows_ascending_cumulative_sums():
    # weights 1, 2, 1 (total 4): u in [0, .25) -> 0, [.25, .75) -> 1, [.75, 1) -> 2.
    z = [0.0, math.log(2.0), 0.0]
    for u, token in [(0.0, 0), (0.2499, 0), (0.25, 1), (0.7499, 1), (0.75, 2), (0.9999, 2)]:
        assert ref.draw(z, u) == token


def test_draw_when_u_times_total_reaches_the_last_sum():
    # u = 1 is outside U's range but is the limit of rounding: the last token with weight.
    assert ref.draw([0.0, 0.0, -math.inf, -math.inf], 1.0) == 1


def test_sample_uses_the_counter_draw():
    from nemo_ref.sampling.rng import uniform

    z = [0.0, 0.0, 0.0, 0.0]
    for step in range(20):
        expected = int(uniform(9, 2, step) * 4)  # equal weights: token = floor(4u)
        assert ref.sample(z, P(), [], [], step=step, choice=2, seed=9).token == expected


def test_sample_needs_a_seed():
    with pytest.raises(ref.SamplingError):
        ref.sample([0.0, 1.0], P(), [], [])
    assert ref.sample([0.0, 1.0], P(seed=3), [], []).token in (0, 1)


# ---- logprobs -----------------------------------------------------------------------------------


def test_raw_logprobs_ignore_every_knob_but_the_mask():
    z = [1.0, 3.0, 3.0, 2.0, 0.5]
    expected = [x - 3.0 - math.log(math.fsum(math.exp(y - 3.0) for y in z)) for x in z]
    assert ref.raw_logprobs(z) == pytest.approx(expected, abs=1e-15)
    knobs = P(temperature=0.3, top_k=2, repetition_penalty=1.7, logprobs=True, top_logprobs=5)
    result = ref.sample(z, knobs, [1, 2], [2], seed=5)
    assert result.logprob == pytest.approx(expected[result.token], abs=1e-15)
    assert result.top == [(i, pytest.approx(expected[i], abs=1e-15)) for i in (1, 2, 3, 0, 4)]


def test_raw_logprobs_are_taken_after_the_mask():
    z = [1.0, 3.0, 3.0, 2.0]
    allowed = [True, False, True, True]
    log_total = math.log(math.exp(1) + math.exp(3) + math.exp(2))
    lp = ref.raw_logprobs(z, allowed)
    assert lp[1] == -math.inf
    assert lp[0] == pytest.approx(1 - log_total) and lp[2] == pytest.approx(3 - log_total)
    result = ref.sample(z, P(logprobs=True, top_logprobs=20), [], [], seed=1, allowed=allowed)
    assert [i for i, _ in result.top] == [2, 3, 0]  # masked token never listed; 3 entries only


def test_processed_logprobs_are_the_final_distribution():
    z = [1.0, 3.0, 3.0, 2.0, 0.5]
    params = P(top_k=2, logprobs=True, top_logprobs=4, logprobs_mode="processed")
    result = ref.sample(z, params, [], [], seed=11)
    assert result.token in (1, 2)
    assert result.logprob == pytest.approx(math.log(0.5))
    assert result.top == [(1, pytest.approx(math.log(0.5))), (2, pytest.approx(math.log(0.5)))]


def test_processed_logprobs_at_temperature_0_are_s3s_log_softmax():
    params = P(temperature=0, logprobs=True, top_logprobs=2, logprobs_mode="processed", **KNOBS)
    result = ref.sample(LOGITS, params, PROMPT, OUTPUT, seed=0)
    log_total = math.log(math.fsum(math.exp(x - 1.0) for x in PENALISED))
    assert result.token == 0  # ties 0 and 5 at 1.0: lower id
    assert result.logprob == pytest.approx(0.0 - log_total)
    assert result.top == [(0, pytest.approx(-log_total)), (5, pytest.approx(-log_total))]


def test_top_logprobs_order_ties_by_lower_id():
    z = [0.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    result = ref.sample(z, P(logprobs=True, top_logprobs=5), [], [], seed=1)
    assert [i for i, _ in result.top] == [1, 3, 5, 2, 4]


# ---- the S0 mask and errors ---------------------------------------------------------------------


@FAST
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=10), st.data())
def test_masked_tokens_are_never_drawn_even_with_huge_bias(z, data):
    allowed = data.draw(st.lists(st.booleans(), min_size=len(z), max_size=len(z)))
    allowed[data.draw(st.integers(0, len(z) - 1))] = True
    params = P(logit_bias={i: 100 for i in range(len(z))}, temperature=2.0)
    assert kept(ref.distribution(z, params, [], [], allowed)) <= {i for i, ok in enumerate(allowed) if ok}
    for step in range(10):
        token = ref.sample(z, params, [], [], step=step, seed=1, allowed=allowed).token
        assert allowed[token]


def test_errors():
    with pytest.raises(ref.SamplingError):
        ref.distribution([1.0, 2.0], P(), [], [], allowed=[False, False])
    with pytest.raises(ref.SamplingError):
        ref.distribution([-math.inf, -math.inf], P(), [], [])
    with pytest.raises(ref.SamplingError):
        ref.distribution([1.0, math.nan], P(), [], [])
    with pytest.raises(ref.SamplingError):
        ref.distribution([1.0, 2.0], P(repetition_penalty=1.1), [5], [])
    with pytest.raises(ref.SamplingError):
        ref.distribution([1.0, 2.0], P(frequency_penalty=1), [], [-1])
    with pytest.raises(ParamError):
        ref.distribution([1.0, 2.0], P(logit_bias={2: 1.0}), [], [])


def test_accepts_a_torch_tensor():
    torch = pytest.importorskip("torch")
    z = torch.tensor([0.5, 2.0, -1.0], dtype=torch.bfloat16)
    assert ref.distribution(z, P(), [], []) == pytest.approx(by_hand_softmax([0.5, 2.0, -1.0]))
    # histories as LongTensors: the same as lists (0-d tensors would not hash as ids)
    as_tensors = ref.distribution(LOGITS, P(**KNOBS), torch.tensor(PROMPT), torch.tensor(OUTPUT))
    assert as_tensors == ref.distribution(LOGITS, P(**KNOBS), PROMPT, OUTPUT)
