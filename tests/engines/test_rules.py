"""Each rule of the engines whose code cannot run here, derived by hand from the cited source line.

vLLM, SGLang, TGI, mistral-inference and OpenAI need a GPU, a server or an account; their rules are
checked on small examples whose expected values are worked out here, by hand, from the rule as the
source states it (test names and docstrings name the file, version and rule). Ollama's chain is
llama.cpp's (checked against the real one in test_llama_cpp.py); its own rules are the
OpenAI route's defaults and ignored fields. The last part recomputes the worked examples of
docs/sampling.md and docs/engines.md for every engine.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nemo_ref.sampling import ParamError
from nemo_ref.sampling.engines import get, names


def softmax(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    w = np.exp(x - x.max())
    return w / w.sum()


def kept(engine: str, logits, request, prompt=(), output=()) -> list[int]:
    return np.flatnonzero(
        get(engine).probabilities(np.asarray(logits, float), request, prompt, output)
    ).tolist()


def stage(engine: str, step: str, logits, request, prompt=(), output=()) -> np.ndarray:
    trace = get(engine).trace(np.asarray(logits, float), request, prompt, output)
    return trace.stage_logits[[name for name, _ in trace.steps].index(step)]


DYADIC = [0.0, -math.log(2), -2 * math.log(2), -2 * math.log(2)]  # probabilities .5, .25, .125, .125


def test_dyadic_logits_give_exact_probabilities():
    """The precondition of the A(t) = p boundary tests below: the mass above token 1 is exactly 0.5."""
    assert softmax(DYADIC).tolist() == [0.5, 0.25, 0.125, 0.125]


# ---- vLLM 0.33.0 ---------------------------------------------------------------------------------


def test_vllm_sampler_py_bias_runs_before_repetition_so_the_sign_test_sees_the_biased_logit():
    """vllm/v1/sample/sampler.py: logit_bias, then penalties. z0 = -1, bias +1.5 -> 0.5 > 0, so
    repetition 2 divides: 0.25 (penalty first would give -2 + 1.5 = -0.5)."""
    z = stage("vllm", "repetition", [-1.0, 0.0], {"logit_bias": {"0": 1.5}, "repetition_penalty": 2.0}, [0])
    assert z.tolist() == [0.25, 0.0]


def test_vllm_apply_penalties_repetition_over_prompt_and_output_once_presence_frequency_over_output():
    """vllm/model_executor/layers/utils.py apply_penalties: repetition on P ∪ O once per token;
    z -= c*f + (c > 0)*pr with c counted in O only. z = 1 everywhere, P = [0, 0], O = [1, 1, 2],
    r 2, f 0.5, pr 0.25: z0 = 1/2; z1 = 1/2 - 2*0.5 - 0.25 = -0.75; z2 = 1/2 - 0.5 - 0.25 = -0.25."""
    request = {"repetition_penalty": 2.0, "frequency_penalty": 0.5, "presence_penalty": 0.25}
    z = stage("vllm", "presence_frequency", [1.0] * 4, request, [0, 0], [1, 1, 2])
    assert z.tolist() == [0.5, -0.75, -0.25, 1.0]


def test_vllm_sampling_params_temperature_floor_zero_greedy_and_range():
    """vllm/sampling_params.py: 0 < T < 0.01 is raised to 0.01; T == 0 is greedy and the filters
    are reset (min_p .9 is skipped, not evaluated); T > 2 is an error; any repetition_penalty > 0."""
    e = get("vllm")
    assert e.resolve({"temperature": 0.001})["temperature"] == 0.01
    p = e.probabilities(np.array([1.0, 3.0, 3.0]), {"temperature": 0.0, "min_p": 0.9})
    assert p.tolist() == [0.0, 1.0, 0.0]  # argmax, first maximum (torch.argmax)
    trace = e.trace(np.array([1.0, 3.0]), {"temperature": 0.0, "top_k": 1})
    assert dict(trace.steps)["top_k"] == "skipped (greedy)"
    with pytest.raises(ParamError) as caught:
        e.resolve({"temperature": 2.5})
    assert caught.value.param == "temperature"
    # "repetition_penalty must be greater than zero": no upper bound (nemo_ref's is 2).
    assert e.resolve({"repetition_penalty": 3.0})["repetition_penalty"] == 3.0
    with pytest.raises(ParamError, match="greater than zero"):
        e.resolve({"repetition_penalty": 0.0})


def test_vllm_min_p_is_strict_and_runs_on_the_tempered_distribution():
    """vllm/v1/sample/logits_processor/builtin.py MinP after temperature: drop p < min_p * p_max.
    Ratios .2 and .05 at T 1 (min_p .1 keeps {0, 1}); at T 2 they are sqrt: .447, .224 (all kept)."""
    z = [0.0, math.log(0.2), math.log(0.05)]
    assert kept("vllm", z, {"min_p": 0.1, "temperature": 1.0}) == [0, 1]
    assert kept("vllm", z, {"min_p": 0.1, "temperature": 2.0}) == [0, 1, 2]


def test_vllm_topk_topp_sampler_top_k_keeps_ties_and_off_values():
    """vllm/v1/sample/ops/topk_topp_sampler.py: logits below the k-th value are masked, so ties at
    the cut stay; 0, -1 and k >= V are off; k < -1 is an error."""
    assert kept("vllm", [2, 1, 1, 0], {"top_k": 2}) == [0, 1, 2]
    for off in (0, -1, 4, 10):
        assert kept("vllm", [2, 1, 1, 0], {"top_k": off}) == [0, 1, 2, 3]
    with pytest.raises(ParamError):
        get("vllm").resolve({"top_k": -2})


def test_vllm_top_p_keeps_mass_above_lt_p_on_the_renormalised_top_k_survivors():
    """topk_topp_sampler.py: top_p after top_k on the re-softmaxed survivors; a token stays iff
    A(t) < p. probs .4 .3 .2 .1, top_k 2 -> .571, .429: A(1) = .571, so top_p .5 keeps {0} and
    top_p .6 keeps {0, 1}. Dyadic .5 .25 ..: A(1) = .5 exactly, top_p .5 drops token 1."""
    z = np.log([0.4, 0.3, 0.2, 0.1])
    assert kept("vllm", z, {"top_k": 2, "top_p": 0.5}) == [0]
    assert kept("vllm", z, {"top_k": 2, "top_p": 0.6}) == [0, 1]
    assert kept("vllm", DYADIC, {"top_p": 0.5}) == [0]


def test_vllm_protocol_clamps_logit_bias_and_logprobs_are_raw():
    """vllm/entrypoints/openai/protocol.py clamps bias values to [-100, 100]; sampler.py computes
    logprobs from the raw logits (the default --logprobs-mode)."""
    e = get("vllm")
    assert e.resolve({"logit_bias": {"1": 150, "2": -300}})["logit_bias"] == {1: 100.0, 2: -100.0}
    z = np.array([2.0, 0.0, -1.0])
    lp = e.logprobs(z, {"temperature": 0.3, "top_k": 1, "presence_penalty": 1.0}, [], [0])
    np.testing.assert_allclose(lp, np.log(softmax(z)), atol=1e-15)
    with pytest.raises(NotImplementedError, match="Gumbel"):
        e.sample(z, {}, [], [], 1)


# ---- SGLang 0.5.23 -------------------------------------------------------------------------------


def test_sglang_penaltylib_every_penalty_covers_the_output_only():
    """srt/sampling/penaltylib/: repetition, frequency and presence track output tokens only.
    P = [0], O = [1], repetition 2: z0 stays 1, z1 = 1/2."""
    assert stage("sglang", "repetition", [1.0, 1.0, 0.0], {"repetition_penalty": 2.0}, [0], [1]).tolist() == [
        1.0,
        0.5,
        0.0,
    ]


def test_sglang_order_additive_penalties_then_repetition_then_bias():
    """srt/layers/sampler.py + penaltylib: frequency/presence, then repetition, then logit_bias.
    O = [0], z0 = 1, presence .5, repetition 2: (1 - .5) / 2 = .25 (vLLM: 1/2 - .5 = 0).
    z0 = -1, repetition 2, bias +1.5: -1 * 2 + 1.5 = -.5 (vLLM: (-1 + 1.5) / 2 = .25)."""
    assert stage(
        "sglang", "logit_bias", [1.0, 0.0], {"presence_penalty": 0.5, "repetition_penalty": 2.0}, [], [0]
    )[0] == pytest.approx(0.25, abs=1e-15)
    assert stage(
        "vllm",
        "presence_frequency",
        [1.0, 0.0],
        {"presence_penalty": 0.5, "repetition_penalty": 2.0},
        [],
        [0],
    )[0] == pytest.approx(0.0, abs=1e-15)
    request = {"repetition_penalty": 2.0, "logit_bias": {"0": 1.5}}
    assert stage("sglang", "logit_bias", [-1.0, 0.0], request, [], [0])[0] == pytest.approx(-0.5, abs=1e-15)


def test_sglang_sampling_params_tiny_temperature_is_top_k_1_and_top_k_0_is_an_error():
    """srt/sampling/sampling_params.py: T < 1e-6 becomes T = 1 with top_k = 1 (greedy);
    top_k must be -1 (disable) or at least 1."""
    e = get("sglang")
    knobs = e.resolve({"temperature": 0.0})
    assert (knobs["temperature"], knobs["top_k"]) == (1.0, 1)
    assert e.probabilities(np.array([0.0, 2.0, 2.0]), {"temperature": 0.0}).tolist() == [0.0, 1.0, 0.0]
    assert e.resolve({"top_k": -1})["top_k"] == 0
    with pytest.raises(ParamError) as caught:
        e.resolve({"top_k": 0})
    assert caught.value.param == "top_k" and "-1 (disable)" in str(caught.value)


def test_sglang_sampler_top_p_keeps_mass_above_le_p_before_top_k_renormalisation():
    """srt/layers/sampler.py: probs_sort[(cumsum - probs_sort) > top_p] = 0 on the full tempered
    distribution, jointly with top_k (rank >= k zeroed). probs .4 .3 .2 .1, top_k 2, top_p .5:
    A(1) = .4 <= .5, kept (vLLM renormalises first: .571 > .5, dropped). Dyadic: A(1) = .5 <= .5."""
    z = np.log([0.4, 0.3, 0.2, 0.1])
    p = get("sglang").probabilities(z, {"top_k": 2, "top_p": 0.5})
    np.testing.assert_allclose(p, [0.4 / 0.7, 0.3 / 0.7, 0, 0], atol=1e-15)
    assert kept("sglang", DYADIC, {"top_p": 0.5}) == [0, 1]


def test_sglang_min_p_after_the_joint_filter_and_logprobs_are_tempered():
    """srt/layers/sampler.py: min_p drops probs < min_p * max after top_k/top_p; the returned
    logprobs are log(softmax(z / T)) after penalties and bias, before the filters."""
    z = np.array([1.0, 0.0, -1.0])
    assert kept("sglang", z, {"min_p": 0.3, "temperature": 1.0}) == [0, 1]  # e^-1 = .37, e^-2 = .14
    lp = get("sglang").logprobs(z, {"temperature": 0.5, "top_k": 1})
    np.testing.assert_allclose(lp, np.log(softmax([2.0, 0.0, -2.0])), atol=1e-15)
    with pytest.raises(NotImplementedError):
        get("sglang").sample(z, {}, [], [], 1)


# ---- Text Generation Inference -------------------------------------------------------------------


def test_tgi_chat_route_maps_presence_penalty_to_repetition_plus_2():
    """router/src/lib.rs ChatRequest::try_into_generate (huggingface/text-generation-inference#1796):
    repetition_penalty = presence_penalty + 2, so presence_penalty 0 is a repetition penalty of 2
    over prompt and output: z = [1, 1], P = [0] -> [0.5, 1]."""
    e = get("tgi")
    assert e.resolve({"presence_penalty": 0.0})["repetition_penalty"] == 2.0
    p = e.probabilities(np.array([1.0, 1.0]), {"presence_penalty": 0.0}, [0], [])
    np.testing.assert_allclose(p, softmax([0.5, 1.0]), atol=1e-15)
    with pytest.raises(ParamError):
        e.resolve({"presence_penalty": -2.0})  # repetition 0: must be strictly positive


def test_tgi_logits_process_frequency_is_count_over_sequence_length():
    """server/text_generation_server/utils/logits_process.py HeterogeneousFrequencyPenalty:
    z -= f * count / len(input_ids), input_ids = prompt + output. P = [0, 0], O = [0, 1], f = 1:
    length 4, counts 3 and 1 -> z0 = -0.75, z1 = -0.25."""
    z = stage("tgi", "normalised_frequency", [0.0, 0.0, 0.0], {"frequency_penalty": 1.0}, [0, 0], [0, 1])
    assert z.tolist() == [-0.75, -0.25, 0.0]


def test_tgi_validation_top_p_open_interval_temperature_and_ignored_fields():
    """router/src/validation.rs: top_p must be > 0.0 and < 1.0 (so 1.0 is a 400); temperature must
    be strictly positive, except 0 on the chat route, which is greedy. top_k, min_p, logit_bias and
    repetition_penalty are not read on the chat route."""
    e = get("tgi")
    for bad in (0.0, 1.0):
        with pytest.raises(ParamError) as caught:
            e.resolve({"top_p": bad})
        assert "< 1.0" in str(caught.value)
    with pytest.raises(ParamError):
        e.resolve({"temperature": -0.5})
    assert e.probabilities(np.array([0.0, 1.0]), {"temperature": 0.0}).tolist() == [0.0, 1.0]
    request = {"top_k": 1, "min_p": 0.5, "logit_bias": {"0": 5}, "repetition_penalty": 1.5}
    assert e.ignored_fields(request) == list(request)
    assert kept("tgi", [0.0, 1.0, 2.0], request) == [0, 1, 2]


def test_tgi_tokens_py_logprobs_are_the_processed_distribution():
    """server/text_generation_server/utils/tokens.py: logprobs of the processed scores; a dropped
    token has -inf."""
    lp = get("tgi").logprobs(np.array([2.0, 1.0, 0.0]), {"temperature": 1.0, "top_p": 0.5})
    assert lp.tolist() == [0.0, -math.inf, -math.inf]


# ---- Ollama (OpenAI route) -----------------------------------------------------------------------


def test_ollama_openai_go_defaults_and_ignored_fields():
    """openai/openai.go + api/types.go: unset temperature and top_p become 1.0, top_k 40 and
    repeat_last_n 64 stay (top_k is not an OpenAI field), min_p 0; top_k, min_p, repetition_penalty
    and logit_bias sent on the OpenAI route are not read."""
    e = get("ollama")
    z = -0.1 * np.arange(60)
    p = e.probabilities(z, {})
    np.testing.assert_allclose(p[:40], softmax(z[:40]), atol=1e-6)  # float32 logits
    assert np.count_nonzero(p) == 40
    request = {"top_k": 2, "min_p": 0.5, "repetition_penalty": 2.0, "logit_bias": {"59": 100}}
    assert e.ignored_fields(request) == list(request)
    assert np.count_nonzero(e.probabilities(z, request, [0], [1])) == 40


# ---- mistral-inference v1.6.0 --------------------------------------------------------------------


def test_mistral_inference_generate_py_fixed_top_p_required_temperature_argmax():
    """src/mistral_inference/generate.py: generate() requires temperature and calls
    sample(logits, temperature, top_p=0.8); sample_top_p drops cumsum - p_t > p (keep A(t) <= .8);
    T <= 0 is argmax; logprobs are log_softmax of the raw logits. Dyadic probs: A = 0, .5, .75,
    .875 -> {0, 1, 2} renormalised by .875."""
    e = get("mistral-inference")
    with pytest.raises(ParamError) as caught:
        e.resolve({})
    assert caught.value.param == "temperature"
    p = e.probabilities(np.array(DYADIC), {"temperature": 1.0})
    np.testing.assert_allclose(p, [0.5 / 0.875, 0.25 / 0.875, 0.125 / 0.875, 0.0], atol=1e-15)
    for t in (0.0, -1.0):
        assert e.probabilities(np.array([0.0, 3.0, 1.0]), {"temperature": t}).tolist() == [0.0, 1.0, 0.0]
    for field, value in [("top_p", 0.9), ("top_k", 5), ("min_p", 0.1), ("presence_penalty", 1.0)]:
        with pytest.raises(ParamError) as caught:
            e.resolve({"temperature": 1.0, field: value})
        assert caught.value.param == field
    assert e.resolve({"temperature": 1.0, "top_p": 0.8})["top_p"] == 0.8  # its own value is fine
    z = np.array([1.0, 0.0])
    np.testing.assert_allclose(e.logprobs(z, {"temperature": 0.1}), np.log(softmax(z)), atol=1e-15)


# ---- OpenAI (documented) -------------------------------------------------------------------------


def test_openai_documented_ranges_and_penalty_formula():
    """API reference: temperature in [0, 2], top_p in [0, 1], penalties in [-2, 2], logit_bias in
    [-100, 100]; parameter details: z -= c*f + (c > 0)*pr, c = times sampled before (output only).
    P = [0], O = [1, 1], f .5, pr .25: z1 = -(2*.5 + .25) = -1.25, z0 untouched."""
    e = get("openai")
    for field, bad in [
        ("temperature", 2.1),
        ("top_p", 1.1),
        ("presence_penalty", -2.5),
        ("logit_bias", {"1": 101}),
    ]:
        with pytest.raises(ParamError) as caught:
            e.resolve({field: bad})
        assert caught.value.param == field
    z = stage(
        "openai",
        "presence_frequency",
        [0.0, 0.0, 0.0],
        {"frequency_penalty": 0.5, "presence_penalty": 0.25},
        [0],
        [1, 1],
    )
    assert z.tolist() == [0.0, -1.25, 0.0]
    with pytest.raises(ParamError, match="Unrecognized"):
        e.resolve({"top_k": 5})


# ---- the worked examples, every engine -----------------------------------------------------------

TEMPERATURE_FIRST = ["nemo_ref", "vllm", "hf", "sglang", "tgi", "mistral-inference", "openai"]
TEMPERATURE_LAST = ["llama.cpp", "ollama"]


def test_example_top_p_before_or_after_temperature():
    """docs/sampling.md: logits [3, 2, 1], top_p 0.8, T 0.5. At T .5 the top token has
    1 / (1 + e^-2 + e^-4) = .867 >= .8: temperature-first keeps {0}; before temperature it has
    .665 < .8, so temperature-last keeps {0, 1} with weights e^6, e^4."""
    request = {"top_p": 0.8, "temperature": 0.5}
    for name in TEMPERATURE_FIRST:
        assert kept(name, [3, 2, 1], request) == [0], name
    for name in TEMPERATURE_LAST:
        p = get(name).probabilities(np.array([3.0, 2.0, 1.0]), request)
        np.testing.assert_allclose(p, [*softmax([6.0, 4.0]), 0.0], atol=1e-6)


def test_example_min_p_before_or_after_temperature():
    """docs/sampling.md: logits [3, 1, 0], min_p 0.2, T 2: after temperature the ratios are
    e^-1, e^-1.5 (.37, .22: all kept); before it e^-2, e^-3 (.14, .05: only token 0)."""
    request = {"min_p": 0.2, "temperature": 2.0}
    for name in ["nemo_ref", "vllm", "hf", "sglang"]:
        np.testing.assert_allclose(
            get(name).probabilities(np.array([3.0, 1, 0]), request), softmax([1.5, 0.5, 0])
        )
    assert kept("llama.cpp", [3, 1, 0], request) == [0]


def test_example_min_p_then_top_p_or_top_p_then_min_p():
    """docs/sampling.md: probs .5 .3 .15 .05, top_p .82, min_p .2. min_p first drops .05 (< .1),
    then the renormalised mass above token 2 is .8/.95 = .842 >= .82: {0, 1}. top_p first: mass
    above token 2 is .8 < .82 (kept), above token 3 .95 (dropped); min_p keeps .15 >= .1: {0, 1, 2}."""
    z = np.log([0.5, 0.3, 0.15, 0.05])
    request = {"top_p": 0.82, "min_p": 0.2, "temperature": 1.0}
    for name in ["nemo_ref", "vllm"]:
        assert kept(name, z, request) == [0, 1], name
    for name in ["hf", "llama.cpp", "sglang"]:
        assert kept(name, z, request) == [0, 1, 2], name


def test_example_ties_at_the_top_k_cut():
    """docs/sampling.md: logits [2, 1, 1, 0], top_k 2: tie-inclusive engines (vLLM, HF) keep
    {0, 1, 2}; exactly-k engines keep the lower id of the tie (nemo_ref, SGLang; llama.cpp's
    choice is unspecified, the emulation takes the lower id)."""
    for name in ["vllm", "hf"]:
        np.testing.assert_allclose(
            get(name).probabilities(np.array([2.0, 1, 1, 0]), {"top_k": 2}), [*softmax([2.0, 1, 1]), 0]
        )
    for name in ["nemo_ref", "sglang", "llama.cpp"]:
        assert kept(name, [2, 1, 1, 0], {"top_k": 2, "temperature": 1.0}) == [0, 1], name


def test_example_repetition_sign_rule_everywhere():
    """docs/sampling.md: repetition 1.3 on [2, -2, 0], all three seen: 2/1.3, -2*1.3, 0 in every
    engine that has the penalty (the CTRL paper divided -2 too: -1.538)."""
    want = [2 / 1.3, -2.6, 0.0]
    for name in ["nemo_ref", "vllm", "hf", "sglang"]:
        z = stage(name, "repetition", [2.0, -2.0, 0.0], {"repetition_penalty": 1.3}, [], [0, 1, 2])
        np.testing.assert_allclose(z, want, rtol=1e-15)
    z = stage("llama.cpp", "repetition", [2.0, -2.0, 0.0], {"repeat_penalty": 1.3}, [0, 1, 2], [])
    np.testing.assert_allclose(z, want, rtol=1e-6)  # float32


def test_example_presence_penalty_scopes():
    """docs/engines.md: logits [1, 1, 0, 0], presence 1, token 0 in the prompt, token 1 generated.
    Output-only engines: [1, 0, 0, 0]; llama.cpp's window includes the prompt: [0, 0, 0, 0];
    TGI: repetition 3 over both: [1/3, 1/3, 0, 0]."""
    args = (np.array([1.0, 1, 0, 0]), {"presence_penalty": 1.0, "temperature": 1.0}, [0], [1])
    for name in ["nemo_ref", "vllm", "sglang", "openai"]:
        np.testing.assert_allclose(get(name).probabilities(*args), softmax([1.0, 0, 0, 0]), atol=1e-15)
    for name in TEMPERATURE_LAST:
        np.testing.assert_allclose(get(name).probabilities(*args), [0.25] * 4, atol=1e-7)
    np.testing.assert_allclose(get("tgi").probabilities(*args), softmax([1 / 3, 1 / 3, 0, 0]), atol=1e-15)


@pytest.mark.parametrize("name", names())
def test_worked_examples_need_no_sort_order(name):
    """Sanity for every engine: the distribution of the examples sums to 1 and keeps rank 0."""
    for logits in ([3, 2, 1], [3, 1, 0], [2, 1, 1, 0]):
        p = get(name).probabilities(np.array(logits, float), {"temperature": 1.0})
        assert math.isclose(p.sum(), 1.0, abs_tol=1e-12) and p[0] == p.max()


def test_request_notes_say_what_each_engine_silently_did():
    """What an auditor needs next to the distribution: ignored fields, clamps and rewrites."""
    assert get("tgi").request_notes({"presence_penalty": 0, "top_k": 5}) == [
        "presence_penalty: 0 becomes repetition_penalty 2.0",
        "top_k: not a field of TGI's chat request: ignored",
    ]
    notes = get("llama.cpp").request_notes({"top_p": 1.5, "repetition_penalty": 1.2})
    assert notes == [
        "top_p: 1.5 clamped to 1.0",
        "repetition_penalty: not a llama-server field (its name is repeat_penalty): ignored",
    ]
    assert get("vllm").request_notes({"temperature": 0.001}) == ["temperature: 0.001 raised to 0.01"]
    assert get("sglang").request_notes({"temperature": 0}) == [
        "temperature: 0.0 becomes temperature 1.0, top_k 1"
    ]
    assert get("nemo_ref").request_notes({"temperature": 0.5, "top_k": 3}) == []


# ---- the worked-examples table of docs/engines.md, every cell by hand ----------------------------

ERROR = "error"


def _cells_by_hand() -> dict[str, dict[str, object]]:
    """Expected final distributions (or ERROR) per example title and engine. The reasoning is in
    the comments; the arithmetic is softmax of small hand-written logit vectors."""
    zero = 0.0
    geometric = -0.1 * np.arange(100)
    return {
        # T .5 first: top token .867 >= .8 -> {0}; llama.cpp/Ollama: top_p on T=1 (.665) keeps 2.
        "logits [3, 2, 1], top_p 0.8, T 0.5": {
            **{n: [1.0, zero, zero] for n in TEMPERATURE_FIRST},
            "llama.cpp": [*softmax([6.0, 4.0]), zero],
            "ollama": [*softmax([6.0, 4.0]), zero],
        },
        # min_p after T keeps all; llama.cpp before T keeps {0}; Ollama ignores min_p; TGI has none;
        # mistral-inference and OpenAI answer an error for min_p.
        "logits [3, 1, 0], min_p 0.2, T 2": {
            **{n: softmax([1.5, 0.5, 0.0]) for n in ["nemo_ref", "vllm", "hf", "sglang", "ollama", "tgi"]},
            "llama.cpp": [1.0, zero, zero],
            "mistral-inference": ERROR,
            "openai": ERROR,
        },
        "probs [.5, .3, .15, .05], top_p 0.82, min_p 0.2": {
            "nemo_ref": [0.5 / 0.8, 0.3 / 0.8, zero, zero],
            "vllm": [0.5 / 0.8, 0.3 / 0.8, zero, zero],
            **{n: [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, zero] for n in ["hf", "llama.cpp", "sglang"]},
            # min_p ignored: top_p alone keeps A = 0, .5, .8 < .82
            **{n: [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, zero] for n in ["ollama", "tgi"]},
            "mistral-inference": ERROR,  # top_p is not a parameter of generate()
            "openai": ERROR,  # min_p
        },
        "logits [2, 1, 1, 0], top_k 2": {
            "nemo_ref": [*softmax([2.0, 1.0]), zero, zero],
            "vllm": [*softmax([2.0, 1.0, 1.0]), zero],
            "hf": [*softmax([2.0, 1.0, 1.0]), zero],
            "llama.cpp": [*softmax([2.0, 1.0]), zero, zero],
            "sglang": [*softmax([2.0, 1.0]), zero, zero],
            "ollama": softmax([2.0, 1.0, 1.0, 0.0]),  # top_k ignored, 40 of 4 keeps all
            "tgi": softmax([2.0, 1.0, 1.0, 0.0]),  # top_k ignored on the chat route
            "mistral-inference": ERROR,
            "openai": ERROR,
        },
        "probs [.4, .3, .2, .1], top_k 2, top_p 0.5": {
            # renormalised after top_k: A(1) = .571 >= .5
            **{n: [1.0, zero, zero, zero] for n in ["nemo_ref", "vllm", "hf", "llama.cpp"]},
            "sglang": [0.4 / 0.7, 0.3 / 0.7, zero, zero],  # A(1) = .4 on the full distribution
            "ollama": [0.4 / 0.7, 0.3 / 0.7, zero, zero],  # top_k ignored: A(1) = .4, A(2) = .7
            "tgi": [0.4 / 0.7, 0.3 / 0.7, zero, zero],
            "mistral-inference": ERROR,
            "openai": ERROR,
        },
        "logits [1, 1, 0, 0], presence_penalty 1, token 0 in the prompt, token 1 generated": {
            **{n: softmax([1.0, 0.0, 0.0, 0.0]) for n in ["nemo_ref", "vllm", "sglang", "openai"]},
            "llama.cpp": [0.25] * 4,  # the window holds the prompt: both penalised
            "ollama": [0.25] * 4,
            "tgi": softmax([1 / 3, 1 / 3, 0.0, 0.0]),  # repetition 3 over prompt + output
            "hf": ERROR,
            "mistral-inference": ERROR,
        },
        "logits [2, 0, 0, 0], repetition_penalty 1.5, token 0 in the prompt": {
            **{n: softmax([2 / 1.5, 0.0, 0.0, 0.0]) for n in ["nemo_ref", "vllm", "hf"]},
            # ignored (llama.cpp, Ollama, TGI) or output-only (SGLang): unpenalised
            **{n: softmax([2.0, 0.0, 0.0, 0.0]) for n in ["llama.cpp", "ollama", "tgi", "sglang"]},
            "mistral-inference": ERROR,
            "openai": ERROR,
        },
        "logits 0, -0.1, ..., -9.9 (100 tokens), empty request": {
            **{n: softmax(geometric) for n in ["nemo_ref", "vllm", "sglang", "tgi", "openai"]},
            "hf": [*softmax(geometric[:50]), *[zero] * 50],  # top_k 50
            "ollama": [*softmax(geometric[:40]), *[zero] * 60],  # top_k 40, T 1, top_p 1
            # top_k 40; top_p .95 on those 40: A(k) = (1 - r^k)/(1 - r^40) < .95, r = e^-.1,
            # k < ln(1 - .95 (1 - e^-4)) / -.1 = 26.97: 27 tokens; min_p .05 keeps z >= -3.0; T .8.
            "llama.cpp": [*softmax(geometric[:27] / 0.8), *[zero] * 73],
            # top_p .8, A(t) <= .8: r^k >= 1 - .8 (1 - e^-10), k <= 16.09: 17 tokens (T 1 given).
            "mistral-inference": [*softmax(geometric[:17]), *[zero] * 83],
        },
    }


def test_docs_engines_md_worked_examples_cell_by_cell():
    from nemo_ref.sampling.engines.doc import EXAMPLES

    by_hand = _cells_by_hand()
    assert [title for title, *_ in EXAMPLES] == list(by_hand)
    for title, logits, request, prompt, output in EXAMPLES:
        for name in names():
            want = by_hand[title][name]
            req = dict(request)
            if name == "mistral-inference":
                req.setdefault("temperature", 1.0)
            if want is ERROR:
                with pytest.raises(ParamError):
                    get(name).probabilities(np.array(logits, float), req, prompt, output)
                continue
            got = get(name).probabilities(np.array(logits, float), req, prompt, output)
            atol = 1e-6 if name in TEMPERATURE_LAST else 1e-12  # float32 engines
            np.testing.assert_allclose(got, want, atol=atol, err_msg=f"{title} / {name}")
