"""The engines package as a whole: the registry, nemo_ref = the reference, every engine's output
is a distribution, neutral knobs give softmax, and docs/sampling.md's worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nemo_ref.sampling import ParamError, SamplingParams, reference
from nemo_ref.sampling.engines import get, names

NEUTRAL_DEFAULT_ENGINES = ["nemo_ref", "vllm", "sglang", "tgi", "openai"]  # no non-neutral default


def _random_case(rng: np.random.Generator, vocab: int) -> tuple[np.ndarray, dict, list[int], list[int]]:
    """Logits with and without exact ties, a history, every knob of nemo_ref on or off at random."""
    z = rng.normal(0, 2, vocab)
    if rng.random() < 0.5:  # exact ties: a few repeated values
        z = np.round(z * 2) / 2
    request: dict = {}
    if rng.random() < 0.8:
        request["temperature"] = float(rng.choice([0.0, 0.3, 0.7, 1.0, 1.5, 2.0]))
    if rng.random() < 0.5:
        request["top_p"] = float(rng.uniform(0, 1))
    if rng.random() < 0.5:
        request["top_k"] = int(rng.integers(-1, vocab + 3))
    if rng.random() < 0.5:
        request["min_p"] = float(rng.uniform(0, 0.5))
    if rng.random() < 0.5:
        request["repetition_penalty"] = float(rng.uniform(0.5, 2))
    if rng.random() < 0.5:
        request["presence_penalty"] = float(rng.uniform(-2, 2))
    if rng.random() < 0.5:
        request["frequency_penalty"] = float(rng.uniform(-2, 2))
    if rng.random() < 0.3:
        request["logit_bias"] = {str(int(i)): float(rng.uniform(-5, 5)) for i in rng.integers(0, vocab, 3)}
    prompt = rng.integers(0, vocab, int(rng.integers(0, 12))).tolist()
    output = rng.integers(0, vocab, int(rng.integers(0, 12))).tolist()
    return z, request, prompt, output


def test_names_and_lookup():
    assert names() == [
        "nemo_ref",
        "vllm",
        "hf",
        "llama.cpp",
        "ollama",
        "sglang",
        "tgi",
        "mistral-inference",
        "openai",
    ]
    with pytest.raises(KeyError, match=r"valid: nemo_ref, vllm, hf, llama\.cpp"):
        get("vllm2")
    e = get("vllm")
    assert e.name == "vllm" and e.version == "vLLM 0.33.0" and e.logprobs_mode == "raw"


def test_nemo_ref_engine_is_the_reference():
    """200 random cases: the same kept set as reference.distribution, probabilities within 1e-12
    (numpy's exp and pairwise sums against math.exp and fsum), the same token for a seed."""
    rng = np.random.default_rng(0)
    e = get("nemo_ref")
    for case in range(200):
        z, request, prompt, output = _random_case(rng, int(rng.integers(2, 80)))
        params = SamplingParams(**request)
        want = np.array(reference.distribution(z.tolist(), params, prompt, output))
        got = e.probabilities(z, request, prompt, output)
        assert np.array_equal(got > 0, want > 0), (case, request)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        seed = int(rng.integers(-(2**63), 2**63 - 1))
        token = reference.sample(
            z.tolist(), params, prompt, output, step=len(output), choice=0, seed=seed
        ).token
        assert e.sample(z, request, prompt, output, seed) == token


def test_nemo_ref_engine_rejects_what_sampling_params_rejects():
    e = get("nemo_ref")
    for field, bad in [
        ("temperature", 2.5),
        ("temperature", -0.1),
        ("top_p", 1.01),
        ("top_k", -2),
        ("top_k", 1.5),
        ("top_k", True),
        ("min_p", -0.1),
        ("repetition_penalty", 0),
        ("presence_penalty", 2.1),
        ("frequency_penalty", -3),
        ("logit_bias", {"5": 101}),
        ("temperature", math.nan),
    ]:
        with pytest.raises(ParamError) as caught:
            SamplingParams(**{field: bad})
        assert caught.value.param == field
        with pytest.raises(ParamError) as caught:
            e.resolve({field: bad})
        assert caught.value.param == field


def test_logits_may_be_numpy_torch_or_list():
    e = get("vllm")
    z = [1.0, 2.0, 0.5]
    want = e.probabilities(np.array(z), {"temperature": 0.5})
    for form in (z, torch.tensor(z), torch.tensor(z, dtype=torch.float64)):
        np.testing.assert_array_equal(e.probabilities(form, {"temperature": 0.5}), want)
    assert e.distribution(z, {"temperature": 0.5}) == want.tolist()


def _valid_request_for(engine_name: str, request: dict) -> dict:
    """Keep only what the engine accepts (each engine's own validation decides)."""
    e = get(engine_name)
    out = {}
    for field, value in request.items():
        try:
            e.resolve(
                {**out, field: value, **({"temperature": 1.0} if engine_name == "mistral-inference" else {})}
            )
        except ParamError:
            continue
        out[field] = value
    if engine_name == "mistral-inference":
        out.setdefault("temperature", 1.0)
    return out


@pytest.mark.parametrize("engine_name", names())
def test_every_engine_returns_a_distribution(engine_name):
    rng = np.random.default_rng(1)
    e = get(engine_name)
    for _ in range(40):
        z, request, prompt, output = _random_case(rng, int(rng.integers(2, 60)))
        request = _valid_request_for(engine_name, request)
        p = e.probabilities(z, request, prompt, output)
        assert p.dtype == np.float64 and p.shape == z.shape
        assert (p >= 0).all() and math.isclose(p.sum(), 1.0, abs_tol=1e-12)
        trace = e.trace(z, request, prompt, output)
        np.testing.assert_allclose(trace.final, p, atol=1e-15)
        assert ((trace.dropped_by >= 0) == (p == 0)).all()
        lp = e.logprobs(z, request, prompt, output)
        assert lp.shape == z.shape and math.isclose(np.exp(lp).sum(), 1.0, abs_tol=1e-9)


@pytest.mark.parametrize("engine_name", NEUTRAL_DEFAULT_ENGINES)
def test_neutral_knobs_at_t1_are_softmax(engine_name):
    z = np.random.default_rng(2).normal(0, 3, 300)
    want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    p = get(engine_name).probabilities(z, {"temperature": 1.0}, prompt_tokens=[1, 2, 3], output_tokens=[4, 4])
    np.testing.assert_allclose(p, want, rtol=1e-12, atol=0)


def test_engines_with_non_neutral_defaults_are_not_softmax():
    """The defaults that bite: HF's top_k 50, llama.cpp's 40 / 0.95 / 0.05 / T 0.8, Ollama's top_k 40
    on the OpenAI route, mistral-inference's fixed top_p 0.8."""
    z = np.linspace(0, -3, 120)  # 120 distinct logits, smooth tail
    kept = {n: int((get(n).probabilities(z, {"temperature": 1.0}) > 0).sum()) for n in names()}
    assert kept["hf"] == 50
    assert kept["ollama"] == 40
    assert kept["llama.cpp"] <= 40
    assert kept["mistral-inference"] < 120
    assert all(kept[n] == 120 for n in NEUTRAL_DEFAULT_ENGINES)


def test_the_package_imports_numpy_only():
    """Core: no torch, server, tokenizer or oracle import anywhere in nemo_ref/sampling/engines."""
    import ast
    from pathlib import Path

    import nemo_ref.sampling.engines as package

    allowed = {"numpy", "math", "numbers", "sys", "collections", "dataclasses", "typing", "__future__"}
    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, (path.name, roots)


def test_top_p_on_flat_distributions_walks_value_buckets_exactly():
    """A flat distribution (a random-weight model's) needs most of the vocabulary: top_p then cuts
    by value buckets instead of sorting. Same kept set as the reference's S8 (pure Python, sorted),
    with and without exact ties, and as a plain sorted walk for the A(t) <= p boundary."""
    from nemo_ref.sampling.engines import steps

    rng = np.random.default_rng(3)
    for case in range(6):
        z = rng.normal(0, 0.05 if case % 2 else 0.5, 20000)
        if case >= 4:
            z = np.round(z * 200) / 200  # many exact ties
        p = float(rng.uniform(0.5, 0.97))
        want = np.isfinite(np.array(reference.top_p(z.tolist(), p)))
        got = np.isfinite(steps.top_p(z, p, "lt"))
        assert np.array_equal(got, want), case
        order = np.lexsort((np.arange(z.size), -z))
        q = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        above = np.concatenate(([0.0], np.cumsum(q[order])[:-1]))
        keep_le = np.zeros(z.size, bool)
        keep_le[order[above <= p]] = True
        assert np.array_equal(np.isfinite(steps.top_p(z, p, "le")), keep_le), case


def test_trace_names_the_step_that_dropped_each_token():
    """llama.cpp's defaults on [3, 2, 1, -2]: top_p .95 drops token 3 (A = .662 + .244 + .090
    >= .95); with top_p 1, min_p .05 (before temperature) drops it (e^-5 < .05)."""
    trace = get("llama.cpp").trace(np.array([3.0, 2.0, 1.0, -2.0]), {})
    assert [trace.dropped_at(t) for t in range(4)] == [None, None, None, "top_p"]
    trace = get("llama.cpp").trace(np.array([3.0, 2.0, 1.0, -2.0]), {"top_p": 1.0})
    assert [trace.dropped_at(t) for t in range(4)] == [None, None, None, "min_p"]
    np.testing.assert_allclose(trace.stage_probabilities(0), softmax_np([3.0, 2.0, 1.0, -2.0]), rtol=1e-6)
    assert [name for name, _ in trace.steps] == [
        "logit_bias",
        "repetition",
        "presence_frequency",
        "top_k",
        "top_p",
        "min_p",
        "temperature",
    ]


def softmax_np(x) -> np.ndarray:
    w = np.exp(np.asarray(x) - max(x))
    return w / w.sum()


def test_bad_rows_are_sampling_errors():
    from nemo_ref.sampling import SamplingError

    e = get("vllm")
    with pytest.raises(SamplingError, match="NaN"):
        e.probabilities([0.0, math.nan], {})
    with pytest.raises(SamplingError, match="outside"):
        e.probabilities([0.0, 1.0], {"repetition_penalty": 1.2}, [5], [])
    assert e.probabilities([0.0, 1.0], {"logit_bias": {"0": -100, "1": -100}}).sum() == 1.0  # finite
    with pytest.raises(SamplingError, match="nothing to sample"):  # llama-server: false bans
        get("llama.cpp").probabilities([0.0, 1.0], {"logit_bias": {"0": False, "1": False}})


def test_rank_prefix_equals_a_full_sort_at_vocabulary_size():
    """The block-maximum shortcut must give exactly the first k ranks of a full sort (descending
    logit, ties lower id first), with and without ties, for small and large k."""
    from nemo_ref.sampling.engines.steps import rank_prefix

    rng = np.random.default_rng(4)
    for z in (rng.normal(0, 3, 131072), np.round(rng.normal(0, 3, 131072) * 8) / 8):
        order = np.lexsort((np.arange(z.size), -z))
        for k in (1, 40, 1000, 4000, 20000):
            assert np.array_equal(rank_prefix(z, k), order[:k]), k
