"""The `hf` emulation against transformers' own logits processors, built by transformers itself.

`GenerationMixin._get_logits_processor` on a tiny MistralForCausalLM builds exactly the list
`generate(do_sample=True)` runs, in transformers' order and with its defaults (top_k 50):
SequenceBias (what the emulation sends logit_bias as), RepetitionPenalty, Temperature, TopK,
TopP, MinP. 320 random cases with exact ties, near-ties, prompt + output histories and every knob.

Where an exact tie straddles the top_p cut, which of the tied tokens survives is decided by
torch.sort's order of equal values (unspecified); there only the number of survivors and their
total mass are compared, which are defined.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from nemo_ref.sampling import ParamError
from nemo_ref.sampling.engines import get

CASES = 320


@pytest.fixture(scope="module")
def tiny_model() -> MistralForCausalLM:
    config = MistralConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
    )
    return MistralForCausalLM(config)


def transformers_final(model, logits: np.ndarray, request: dict, history: list[int]) -> np.ndarray:
    """softmax of the scores after the processors generate(do_sample=True, **request) builds."""
    kwargs = {k: v for k, v in request.items() if k != "logit_bias"}
    if request.get("logit_bias"):
        kwargs["sequence_bias"] = {(int(t),): float(b) for t, b in request["logit_bias"].items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config, _ = model._prepare_generation_config(None, do_sample=True, **kwargs)
        ids = torch.tensor([history or [0]], dtype=torch.long)
        processors = model._get_logits_processor(
            config,
            input_ids_seq_length=ids.shape[1],
            device="cpu",
            model_kwargs={"attention_mask": torch.ones_like(ids)},
        )
    if not history:  # no input ids at all: the repetition processor must see none
        processors = [p for p in processors if type(p).__name__ != "RepetitionPenaltyLogitsProcessor"]
    scores = torch.tensor(logits[None, :], dtype=torch.float64)
    for p in processors:
        scores = p(ids, scores)
    return torch.softmax(scores, dim=-1)[0].numpy()


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, dict, list[int], list[int]]:
    vocab = int(rng.integers(64, 513))
    z = rng.normal(0, 2.5, vocab)
    kind = rng.integers(0, 3)
    if kind == 1:  # exact ties
        z = np.round(z * 4) / 4
    elif kind == 2:  # near-ties: pairs 1e-9 apart
        z[1::2] = z[0::2][: z[1::2].size] + 1e-9
    request: dict = {"temperature": float(rng.choice([1.0, rng.uniform(0.2, 2.0)]))}
    if rng.random() < 0.6:
        request["top_k"] = int(rng.choice([0, rng.integers(1, vocab + 5)]))
    if rng.random() < 0.6:
        request["top_p"] = float(rng.uniform(0.05, 1.0))
    if rng.random() < 0.5:
        request["min_p"] = float(rng.uniform(0.0, 0.4))
    if rng.random() < 0.5:
        request["repetition_penalty"] = float(rng.uniform(0.5, 2.0))
    if rng.random() < 0.3:
        # Multiples of 1/64: SequenceBiasLogitsProcessor keeps biases as float32, and an exactly
        # representable value keeps that storage detail out of the comparison.
        request["logit_bias"] = {
            str(int(t)): int(rng.integers(-192, 193)) / 64 for t in rng.integers(0, vocab, 3)
        }
    prompt = rng.integers(0, vocab, int(rng.integers(0, 20))).tolist()
    output = rng.integers(0, vocab, int(rng.integers(0, 10))).tolist()
    return z, request, prompt, output


def _tie_at_top_p_cut(trace) -> bool:
    names = [name for name, _ in trace.steps]
    i = names.index("top_p")
    before, after = trace.stage_logits[i - 1], trace.stage_logits[i]
    kept = np.isfinite(after)
    dropped_here = np.isfinite(before) & ~kept
    return bool(dropped_here.any()) and bool(np.isin(before[dropped_here], after[kept]).any())


def test_hf_emulation_equals_transformers_processors(tiny_model):
    rng = np.random.default_rng(5)
    e = get("hf")
    ambiguous = 0
    for case in range(CASES):
        z, request, prompt, output = random_case(rng)
        want = transformers_final(tiny_model, z, request, prompt + output)
        trace = e.trace(z, request, prompt, output)
        got = trace.final
        if _tie_at_top_p_cut(trace):
            ambiguous += 1
            assert np.count_nonzero(got) == np.count_nonzero(want), (case, request)
            assert math.isclose(got.max(), want.max(), rel_tol=1e-9)
            continue
        assert np.array_equal(got > 0, want > 0), (case, request)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert ambiguous < CASES // 10  # the comparison stays mostly exact


def test_default_top_k_is_50_as_transformers_builds_it(tiny_model):
    z = np.linspace(2, -2, 200)
    want = transformers_final(tiny_model, z, {"temperature": 1.0}, [1])
    got = get("hf").probabilities(z, {"temperature": 1.0}, [1])
    assert np.count_nonzero(want) == np.count_nonzero(got) == 50
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_temperature_zero_is_an_error_in_both(tiny_model):
    with pytest.raises(ValueError, match="strictly positive"):
        transformers_final(tiny_model, np.zeros(8), {"temperature": 0.0}, [1])
    with pytest.raises(ParamError) as caught:
        get("hf").resolve({"temperature": 0.0})
    assert caught.value.param == "temperature" and "do_sample=False" in str(caught.value)


def test_presence_and_frequency_do_not_exist_in_generate():
    e = get("hf")
    assert e.resolve({"presence_penalty": 0.0})["presence_penalty"] == 0.0  # neutral: as if omitted
    for field in ("presence_penalty", "frequency_penalty"):
        with pytest.raises(ParamError) as caught:
            e.resolve({field: 0.5})
        assert caught.value.param == field


def test_worked_examples_of_docs_sampling_md_hf_column(tiny_model):
    """docs/sampling.md: HF's order (top_p, then min_p) keeps {0, 1, 2} of probs [.5, .3, .15, .05]
    at top_p 0.82, min_p 0.2; its top_k keeps the tie at the cut of [2, 1, 1, 0]; its repetition
    penalty multiplies negative logits."""
    e = get("hf")
    z = np.log([0.5, 0.3, 0.15, 0.05])
    request = {"temperature": 1.0, "top_p": 0.82, "min_p": 0.2}
    got = e.probabilities(z, request)
    np.testing.assert_allclose(got, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0], atol=1e-12)
    np.testing.assert_allclose(transformers_final(tiny_model, z, request, [3]), got, atol=1e-12)
    got = e.probabilities(np.array([2.0, 1.0, 1.0, 0.0]), {"top_k": 2})
    w = np.exp([2.0, 1.0, 1.0])
    np.testing.assert_allclose(got, [*(w / w.sum()), 0], atol=1e-12)
    trace = e.trace(np.array([2.0, -2.0, 0.0]), {"repetition_penalty": 1.3}, [0, 1, 2])
    np.testing.assert_allclose(trace.stage_logits[1], [2 / 1.3, -2.6, 0.0], atol=1e-15)
