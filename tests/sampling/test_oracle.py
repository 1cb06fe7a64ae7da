"""Oracles nobody here wrote: transformers' logits processors (and OpenAI's published
presence/frequency formula) applied in the spec's order give the same final distribution as the
reference wherever the semantics coincide (no tie or near-tie at a cut-off). The same processors,
in other engines' orders, compute the "others" column of docs/sampling.md's worked examples, and
the doc's table is checked against them here.

The chain is nemo_ref/sampling/transformers_chain.py's (scripts/bench_sampler.py times it in
transformers' own order).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
)

from nemo_ref.sampling import reference as ref
from nemo_ref.sampling.params import SamplingParams
from nemo_ref.sampling.transformers_chain import SPEC_ORDER
from nemo_ref.sampling.transformers_chain import processors as hf_processors

MARGIN = 1e-9
DOC = Path(__file__).resolve().parents[2] / "docs" / "sampling.md"


def near_a_cut(name: str, scores: torch.Tensor, params: SamplingParams) -> bool:
    """Whether the cut `name` is about to make is within MARGIN of a tie (where the engines'
    semantics, or float rounding, may legitimately differ)."""
    s = scores[0]
    finite = s[s > -math.inf]
    probs = torch.softmax(finite, 0)
    if name == "min_p":
        return bool(((probs - params.min_p * probs.max()).abs() <= MARGIN * probs.max()).any())
    if name == "top_k" and params.top_k < finite.numel():
        ranked = finite.sort(descending=True).values
        return bool(ranked[params.top_k - 1] - ranked[params.top_k] <= MARGIN)
    if name == "top_p":
        ranked = probs.sort(descending=True).values
        before = ranked.cumsum(0) - ranked
        failing = [r for r in range(1, ranked.numel()) if before[r] >= params.top_p]
        # a tie across the cut: which of the tied tokens stays is each engine's own rule
        tie_at_cut = bool(failing) and bool(ranked[failing[0] - 1] - ranked[failing[0]] <= MARGIN)
        return tie_at_cut or bool(((before - params.top_p).abs() <= MARGIN).any())
    return False


def hf_distribution(
    logits, params, prompt, output, order=SPEC_ORDER, check_margins: bool = True
) -> list[float] | None:
    """The oracle's final distribution; None when a cut-off is too close to call (if checked)."""
    scores = torch.tensor([logits], dtype=torch.float64)
    input_ids = torch.tensor([[*prompt, *output]], dtype=torch.long)
    output_ids = torch.tensor([list(output)], dtype=torch.long)
    for name, processor in zip(
        [n for n in order if hf_processors(params, output_ids, (n,))],
        hf_processors(params, output_ids, order),
        strict=True,
    ):
        if check_margins and near_a_cut(name, scores, params):
            return None
        scores = processor(input_ids, scores)
    return torch.softmax(scores, -1)[0].tolist()


@st.composite
def cases(draw):
    vocab = draw(st.integers(2, 30))
    logits = draw(st.lists(st.floats(-8, 8), min_size=vocab, max_size=vocab, unique=True))
    history = st.lists(st.integers(0, vocab - 1), max_size=10)
    sixty_fourths = st.integers(-320, 320).map(lambda x: x / 64)
    params = SamplingParams(
        temperature=draw(st.one_of(st.just(1.0), st.floats(0.1, 2))),
        top_k=draw(st.one_of(st.just(0), st.integers(1, vocab))),
        top_p=draw(st.one_of(st.just(1.0), st.floats(0.05, 0.999))),
        min_p=draw(st.one_of(st.just(0.0), st.floats(0.01, 0.6))),
        repetition_penalty=draw(st.one_of(st.just(1.0), st.floats(0.5, 2))),
        presence_penalty=draw(st.floats(-2, 2)),
        frequency_penalty=draw(st.floats(-2, 2)),
        # SequenceBiasLogitsProcessor holds its biases in float32: use values exact in float32.
        logit_bias=draw(st.dictionaries(st.integers(0, vocab - 1), sixty_fourths, max_size=3)),
    )
    return logits, params, draw(history), draw(history)


@settings(max_examples=150, deadline=None)
@given(cases())
def test_reference_equals_transformers_processors_in_the_spec_order(case):
    logits, params, prompt, output = case
    expected = hf_distribution(logits, params, prompt, output)
    assume(expected is not None)
    got = ref.distribution(logits, params, prompt, output)
    assert {i for i, q in enumerate(got) if q > 0} == {i for i, q in enumerate(expected) if q > 0}
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) <= 1e-9


# ---- the worked examples of docs/sampling.md ----------------------------------------------------

# (label in the doc, logits, knobs, the other engines, their order, nemo_ref's set, theirs), every
# set derived by hand in tests/sampling/test_reference.py's comments and the spec.
EXAMPLES = [
    ("logits [3, 2, 1], top_p 0.8, T 0.5", [3.0, 2.0, 1.0], {"top_p": 0.8, "temperature": 0.5},
     "llama.cpp (temperature last)", ("top_p", "temperature"), {0}, {0, 1}),
    ("logits [3, 1, 0], min_p 0.2, T 2", [3.0, 1.0, 0.0], {"min_p": 0.2, "temperature": 2.0},
     "llama.cpp (temperature last)", ("min_p", "temperature"), {0, 1, 2}, {0}),
    ("probs [.5, .3, .15, .05], top_p 0.82, min_p 0.2",
     [math.log(x) for x in (0.5, 0.3, 0.15, 0.05)], {"top_p": 0.82, "min_p": 0.2},
     "HF (top_p, then min_p)", ("top_p", "min_p"), {0, 1}, {0, 1, 2}),
    ("logits [2, 1, 1, 0], top_k 2", [2.0, 1.0, 1.0, 0.0], {"top_k": 2},
     "HF, vLLM (ties at the cut kept)", ("top_k",), {0, 1}, {0, 1, 2}),
]  # fmt: skip


def show(probs: list[float]) -> str:
    return "{" + ", ".join(f"{i}: {q:.4f}" for i, q in enumerate(probs) if q > 0) + "}"


def example_row(label, logits, knobs, engines, order, *_) -> str:
    params = SamplingParams(**knobs)
    ours = show(ref.distribution(logits, params, [], []))
    theirs = show(hf_distribution(logits, params, [], [], order, check_margins=False))
    return f"| {label} | {ours} | {engines}: {theirs} |"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_worked_example_and_its_row_in_the_doc(example):
    _, logits, knobs, _, order, ours, theirs = example
    params = SamplingParams(**knobs)
    assert {i for i, q in enumerate(ref.distribution(logits, params, [], [])) if q > 0} == ours
    other = hf_distribution(logits, params, [], [], order, check_margins=False)
    assert {i for i, q in enumerate(other) if q > 0} == theirs
    assert example_row(*example) in DOC.read_text(), example_row(*example)


def test_repetition_example_and_its_row_in_the_doc():
    z = [2.0, -2.0, 0.0]
    ours = dict(ref.pipeline(z, SamplingParams(repetition_penalty=1.3), [0, 1, 2], []))
    hf = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([[0, 1, 2]]), torch.tensor([z]))
    assert ours["repetition"] == pytest.approx(hf[0].tolist())
    ctrl = [x / 1.3 for x in z]  # the CTRL paper's rule divides every seen logit
    row = (
        "| repetition 1.3 on logits [2, -2, 0] | "
        + ", ".join(f"{x:.4f}" for x in ours["repetition"])
        + " | CTRL paper: "
        + ", ".join(f"{x:.4f}" for x in ctrl)
        + " |"
    )
    assert row in DOC.read_text(), row


def test_the_chain_names_its_steps_and_refuses_others():
    """The oracle chain builds what it is asked, in that order, and nothing it does not know."""
    params = SamplingParams(temperature=0.5, top_k=3, min_p=0.1)
    out = torch.zeros(1, 0, dtype=torch.long)
    kinds = [type(p).__name__ for p in hf_processors(params, out, ("top_k", "min_p", "temperature", "top_p"))]
    assert kinds == ["TopKLogitsWarper", "MinPLogitsWarper", "TemperatureLogitsWarper"]  # top_p 1: off
    with pytest.raises(ValueError, match="unknown steps \\['typical'\\]"):
        hf_processors(params, out, ("temperature", "typical"))
