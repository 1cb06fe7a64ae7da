"""The batched torch sampler against the pure-Python reference: same distribution (<= 1e-12) and
same token for the same (seed, choice, step), over random logits (with and without exact ties),
random valid parameters, histories and masks, with rows of different parameters in one batch."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nemo_ref.sampling import batched
from nemo_ref.sampling import reference as ref
from nemo_ref.sampling.batched import SampleRow, distribution_batch, sample_batch
from nemo_ref.sampling.params import SamplingParams

TOL = 1e-12


def params_strategy(vocab: int) -> st.SearchStrategy[SamplingParams]:
    def either(off, on):
        return st.one_of(st.just(off), on)

    return st.builds(
        SamplingParams,
        temperature=st.one_of(st.sampled_from([0.0, 1.0, 1e-6]), st.floats(0.01, 2)),
        top_p=st.one_of(st.sampled_from([1.0, 0.0]), st.floats(0, 1)),
        top_k=st.one_of(st.sampled_from([0, -1, 1]), st.integers(1, vocab + 2)),
        min_p=st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0, 1)),
        repetition_penalty=either(1.0, st.floats(1e-3, 2)),
        presence_penalty=either(0.0, st.floats(-2, 2)),
        frequency_penalty=either(0.0, st.floats(-2, 2)),
        logit_bias=st.dictionaries(st.integers(0, vocab - 1), st.floats(-100, 100), max_size=3),
        logprobs=st.just(True),
        top_logprobs=st.integers(0, 20),
        logprobs_mode=st.sampled_from(["raw", "processed"]),
    )


@st.composite
def batches(draw, max_vocab: int = 40):
    vocab = draw(st.integers(1, max_vocab))
    tied = st.integers(-3, 3).map(float)  # many exact ties
    spread = st.floats(-50, 50)
    rows, logits = [], []
    for b in range(draw(st.integers(1, 4))):
        values = draw(st.lists(draw(st.sampled_from([tied, spread])), min_size=vocab, max_size=vocab))
        allowed = None
        if draw(st.booleans()):
            mask = draw(st.lists(st.booleans(), min_size=vocab, max_size=vocab))
            mask[draw(st.integers(0, vocab - 1))] = True
            allowed = torch.tensor(mask)
        history = st.lists(st.integers(0, vocab - 1), max_size=8)
        rows.append(
            SampleRow(
                params=draw(params_strategy(vocab)),
                seed=draw(st.integers(-(2**63), 2**63 - 1)),
                choice=b,
                step=draw(st.integers(0, 2**32 - 1)),
                prompt_tokens=draw(history),
                output_tokens=draw(history),
                allowed=allowed,
            )
        )
        logits.append(values)
    return torch.tensor(logits, dtype=torch.float32), rows


def reference_result(logits: torch.Tensor, row: SampleRow) -> ref.SampleResult:
    return ref.sample(
        logits, row.params, row.prompt_tokens, row.output_tokens, row.step, row.choice, row.seed,
        row.allowed,
    )  # fmt: skip


def close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= TOL * max(1.0, abs(a))


def same_top(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    """Same entries in the same order; ids may differ only where their logprobs are equal to
    within float noise (two implementations may round a near-tie either way)."""
    if len(a) != len(b) or not all(close(x[1], y[1]) for x, y in zip(a, b, strict=True)):
        return False
    return all(x[0] == y[0] or close(x[1], y[1]) for x, y in zip(a, b, strict=True))


def check_against_reference(batch) -> None:
    logits, rows = batch
    probs = distribution_batch(logits, rows)
    results = sample_batch(logits, rows)
    for b, row in enumerate(rows):
        expected = ref.distribution(logits[b], row.params, row.prompt_tokens, row.output_tokens, row.allowed)
        assert max(abs(x - y) for x, y in zip(expected, probs[b].tolist(), strict=True)) <= TOL
        want = reference_result(logits[b], row)
        got = results[b]
        assert got.token == want.token
        assert close(got.logprob, want.logprob)
        assert same_top(got.top, want.top)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_batched_equals_reference(batch):
    check_against_reference(batch)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(max_vocab=64))
def test_batched_equals_reference_on_its_fast_paths(batch):
    # At these vocab sizes the shortcuts made for 131072 ids would not run. Shrink them: top_p
    # alone starts from 2 candidates (and must grow), the k-th value search uses blocks of 2 ids.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batched, "TOP_P_FIRST_CANDIDATES", 2)
        patch.setattr(batched, "BLOCK", 2)
        check_against_reference(batch)


def test_full_vocabulary_top_k_equals_reference():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 131072, generator=g) * 3
    # row 1: a five-way tie for rank 0, spread over blocks; top_k 3 keeps the three lowest ids
    logits[1, [131071, 70000, 4000, 300, 7]] = logits[1].max() + 1
    params = SamplingParams(
        top_k=3, top_p=0.95, min_p=0.01, temperature=0.7, repetition_penalty=1.2, logprobs=True,
        top_logprobs=7,
    )  # fmt: skip
    rows = [SampleRow(params, 4, b, 9, [1, 2, 1005], [1001]) for b in range(2)]
    assert set(distribution_batch(logits[1:], rows[1:])[0].nonzero().flatten().tolist()) == {7, 300, 4000}
    for b, row in enumerate(rows):
        expected = ref.distribution(logits[b], params, row.prompt_tokens, row.output_tokens)
        expected = torch.tensor(expected, dtype=torch.float64)
        # alone (row 0 takes the block fast path, row 1 the dense one), then both together
        for probs in (distribution_batch(logits[b : b + 1], [row])[0], distribution_batch(logits, rows)[b]):
            assert torch.allclose(probs, expected, atol=TOL, rtol=0)
        want = reference_result(logits[b], row)
        for got in (sample_batch(logits[b : b + 1], [row])[0], sample_batch(logits, rows)[b]):
            assert got.token == want.token and close(got.logprob, want.logprob)
            assert same_top(got.top, want.top)  # raw logprobs: the block search over 131072 ids


def test_logprobs_are_computed_only_when_asked():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    result = sample_batch(logits, [SampleRow(SamplingParams(), 1, 0, 0, [], [])])[0]
    assert math.isnan(result.logprob) and result.top == []


def test_top_p_candidate_growth_on_a_flat_distribution():
    # 5000 near-equal tokens and top_p 0.99 without top_k: more than the first 1024 candidates
    # are needed, so the candidate set grows (x8) before the kept prefix is complete.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5000, generator=g, dtype=torch.float64) * 0.1
    rows = [
        SampleRow(SamplingParams(top_p=0.99, temperature=1.5), 1, 0, 0, [], []),
        SampleRow(SamplingParams(top_p=0.3, min_p=0.9), 1, 1, 0, [], []),
    ]
    probs = distribution_batch(logits, rows)
    for b, row in enumerate(rows):
        expected = torch.tensor(ref.distribution(logits[b], row.params, [], []), dtype=torch.float64)
        assert torch.allclose(probs[b], expected, atol=TOL, rtol=0)
        assert (probs[b] > 0).sum() == (expected > 0).sum()
    assert (probs[0] > 0).sum() > 1024


def test_vocabulary_is_never_sorted_whole(monkeypatch):
    vocab = 131072
    sorted_sizes: list[int] = []
    real_sort = torch.sort

    def spy(x, *args, **kwargs):
        sorted_sizes.append(x.shape[-1])
        return real_sort(x, *args, **kwargs)

    monkeypatch.setattr(batched.torch, "sort", spy)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, vocab, generator=g) * 4  # a peaked, LLM-like distribution
    every_knob = SamplingParams(
        temperature=0.8, top_p=0.9, top_k=50, min_p=0.02, repetition_penalty=1.1,
        presence_penalty=0.3, frequency_penalty=0.2, logit_bias={5: 2.0}, logprobs=True,
        top_logprobs=5,
    )  # fmt: skip
    rows = [
        SampleRow(SamplingParams(), 1, 0, 0, [1, 2], [3]),  # every filter off
        SampleRow(every_knob, 2, 0, 0, list(range(100)), [7, 7, 8]),
        SampleRow(SamplingParams(top_p=0.9), 3, 0, 0, [], []),  # top_p alone
    ]
    sample_batch(logits, rows)
    assert sorted_sizes and max(sorted_sizes) < vocab // 16


def test_does_not_modify_the_callers_logits_and_accepts_a_strided_view():
    g = torch.Generator().manual_seed(2)
    full = torch.randn(3, 4, 16, generator=g)
    view = full[:, -1, :]  # not contiguous
    before = view.clone()
    row = SampleRow(SamplingParams(repetition_penalty=1.5, logit_bias={0: 3}), 5, 0, 0, [0, 1], [2])
    results = sample_batch(view, [row] * 3)
    assert torch.equal(view, before)
    assert results[0].token == reference_result(view[0], row).token


def test_draw_falls_back_to_the_last_token_with_weight():
    final = torch.tensor([[0.0, 0.0, -math.inf, -math.inf]], dtype=torch.float64)
    u = torch.tensor([1.0], dtype=torch.float64)
    assert batched._draw(batched._Group([0], None, final), u, keep_vals=True).tolist() == [1]
    packed = batched._Group([0], torch.tensor([[3, 8, 9, 10]]), final)  # ids of packed survivors
    assert batched._draw(packed, u, keep_vals=False).tolist() == [8]


def test_errors_match_the_reference():
    row = SampleRow(SamplingParams(), 0, 0, 0, [], [], allowed=torch.tensor([False, False]))
    with pytest.raises(ref.SamplingError):
        sample_batch(torch.zeros(1, 2), [row])
    with pytest.raises(ref.SamplingError):
        sample_batch(torch.tensor([[0.0, math.nan]]), [SampleRow(SamplingParams(), 0, 0, 0, [], [])])
    with pytest.raises(ref.SamplingError):
        penalty = SamplingParams(repetition_penalty=1.2)
        sample_batch(torch.zeros(1, 2), [SampleRow(penalty, 0, 0, 0, [2], [])])
    with pytest.raises(ref.SamplingError):
        penalty = SamplingParams(presence_penalty=1.2)
        sample_batch(torch.zeros(1, 2), [SampleRow(penalty, 0, 0, 0, [], [-1])])
    tiny = SampleRow(SamplingParams(repetition_penalty=1e-310), 0, 0, 0, [0], [])
    with pytest.raises(ref.SamplingError):
        sample_batch(torch.ones(1, 2), [tiny])
    with pytest.raises(ref.SamplingError):
        ref.sample(torch.ones(2), tiny.params, [0], [], seed=0)
    with pytest.raises(ref.SamplingError):
        sample_batch(torch.zeros(2, 3), [row])  # one row for two logits rows


def test_histories_as_long_tensors_equal_lists():
    logits = torch.randn(2, 50, generator=torch.Generator().manual_seed(5))
    params = SamplingParams(repetition_penalty=1.5, frequency_penalty=0.7, presence_penalty=0.2)
    lists = [SampleRow(params, 3, b, 1, [1, 4, 4, 9], [9, 9, 30]) for b in range(2)]
    tensors = [
        SampleRow(params, 3, b, 1, torch.tensor([1, 4, 4, 9]), torch.tensor([9, 9, 30])) for b in range(2)
    ]
    assert torch.equal(distribution_batch(logits, lists), distribution_batch(logits, tensors))
