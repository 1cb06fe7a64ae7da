"""Reproducibility of the counter-based draws: the token for (seed, choice, step) depends on the
seed, the counters, the logits and the history only; not on logprobs settings, on the other rows of
the batch, or on whether another step was greedy or forced by a grammar."""

from __future__ import annotations

import torch

from nemo_ref.sampling import reference as ref
from nemo_ref.sampling.batched import SampleRow, sample_batch
from nemo_ref.sampling.params import SamplingParams

VOCAB = 48
STEPS = 24
TABLE = torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
PROMPT = [1, 5, 9, 5]
PENALISED = SamplingParams(
    temperature=1.1, top_p=0.95, top_k=20, min_p=0.01, repetition_penalty=1.3,
    presence_penalty=0.6, frequency_penalty=0.4, logit_bias={4: 1.5},
)  # fmt: skip


def fake_model(tokens: list[int]) -> torch.Tensor:
    """Deterministic next-token logits from the last token: a stand-in for the model."""
    return TABLE[tokens[-1]] * 2.5


def generate(seed: int, params=PENALISED, choice: int = 0, forced: dict | None = None) -> list[int]:
    """A generation loop over the batched sampler; `forced` maps step -> the only allowed token."""
    output: list[int] = []
    for step in range(STEPS):
        allowed = None
        if forced and step in forced:
            allowed = torch.zeros(VOCAB, dtype=torch.bool)
            allowed[forced[step]] = True
        row = SampleRow(params, seed, choice, step, PROMPT, list(output), allowed)
        output.append(sample_batch(fake_model(PROMPT + output)[None], [row])[0].token)
    return output


def test_same_seed_same_tokens_with_penalties_active():
    first = generate(seed=1234)
    assert generate(seed=1234) == first
    assert len(set(first)) > 3  # not a degenerate loop
    others = {tuple(generate(seed=s)) for s in (1, 2, 3)}
    assert tuple(first) not in others and len(others) == 3


def test_batched_loop_equals_reference_loop():
    tokens = generate(seed=99, choice=3)
    output: list[int] = []
    for step in range(STEPS):
        logits = fake_model(PROMPT + output)
        output.append(ref.sample(logits, PENALISED, PROMPT, output, step, 3, 99).token)
    assert output == tokens


def test_choices_differ_but_each_is_reproducible():
    assert generate(seed=5, choice=0) != generate(seed=5, choice=1)
    assert generate(seed=5, choice=1) == generate(seed=5, choice=1)


def test_a_forced_step_does_not_shift_later_draws():
    # Forcing step 6 to the token it would have drawn anyway leaves every later token unchanged:
    # the forced step did not consume (or skip) anything another step needs.
    free = generate(seed=42)
    assert generate(seed=42, forced={6: free[6]}) == free


def test_a_greedy_or_forced_step_leaves_the_next_draw_to_its_own_counter():
    history = [3, 7]
    logits = fake_model(PROMPT + history)
    expected = ref.sample(logits, PENALISED, PROMPT, history, step=2, choice=0, seed=8)
    greedy = SamplingParams(temperature=0)
    forced = torch.zeros(VOCAB, dtype=torch.bool)
    forced[11] = True
    # before step 2: a greedy step 1 and a forced step 1 on the same request
    sample_batch(logits[None], [SampleRow(greedy, 8, 0, 1, PROMPT, history[:1])])
    sample_batch(logits[None], [SampleRow(PENALISED, 8, 0, 1, PROMPT, history[:1], forced)])
    got = sample_batch(logits[None], [SampleRow(PENALISED, 8, 0, 2, PROMPT, history)])[0]
    assert got.token == expected.token


def test_draw_is_independent_of_logprobs_and_of_the_rest_of_the_batch():
    history = [2, 2, 30]
    logits = fake_model(PROMPT + history)
    for step in range(30):
        alone = sample_batch(logits[None], [SampleRow(PENALISED, 77, 1, step, PROMPT, history)])[0]
        with_logprobs = SamplingParams(
            **{**PENALISED.__dict__, "logprobs": True, "top_logprobs": 5, "logprobs_mode": "processed"}
        )
        neighbours = [
            SampleRow(SamplingParams(temperature=0), 1, 0, step, [0], [1, 1]),
            SampleRow(with_logprobs, 77, 1, step, PROMPT, history),
            SampleRow(SamplingParams(top_p=0.5, min_p=0.2, seed=3), 3, 9, 0, [4] * 50, []),
        ]
        other_logits = torch.stack([TABLE[0], logits, TABLE[5]])
        crowded = sample_batch(other_logits, neighbours)[1]
        assert crowded.token == alone.token
        assert crowded.top and len(crowded.top) == 5
