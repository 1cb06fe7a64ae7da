"""The llama.cpp and Ollama emulations against llama.cpp's own sampler chain.

llama-cpp-python 0.3.36 (the `oracles` extra; scripts/setup.sh builds it) exposes the C sampler
API, so the real chain runs here on arbitrary logits without any model: logit_bias -> penalties ->
top_k -> top_p -> min_p -> temperature -> dist, the order of common/sampling.cpp, with the prompt
and the output accepted into the penalties' window as llama-server does (tools/server/
server-context.cpp accepts every prompt token, then each sampled one) and one dist draw per
generated token. No skip: a missing llama_cpp is a failed set-up, and this file fails with it.

Logits are float32 and distinct (top_k's choice among equal logits at its cut is left to
std::partial_sort, so ties there are not defined behaviour to compare).
"""

from __future__ import annotations

import ctypes

import llama_cpp as L
import numpy as np
import pytest

from nemo_ref.sampling import ParamError
from nemo_ref.sampling.engines import get
from nemo_ref.sampling.engines.mt19937 import mt19937_words, uniform_doubles

CASES = 320


def real_chain(
    logits: np.ndarray,
    knobs: dict,
    prompt: list[int],
    output: list[int],
    seed: int,
) -> tuple[dict[int, float], int]:
    """Run llama.cpp's chain as llama-server builds it; return {kept id: probability} and the
    selected token. The dist draws of the earlier steps are consumed by applying the chain once per
    output token before accepting it, as the server's decode loop does."""
    vocab = logits.size
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    try:
        bias = knobs["logit_bias"]
        if bias:
            items = (L.llama_logit_bias * len(bias))(*(L.llama_logit_bias(t, b) for t, b in bias.items()))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_logit_bias(vocab, len(bias), items))
        L.llama_sampler_chain_add(
            chain,
            L.llama_sampler_init_penalties(
                vocab,
                knobs["repeat_last_n"],
                knobs["repetition_penalty"],
                knobs["frequency_penalty"],
                knobs["presence_penalty"],
            ),
        )
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(knobs["top_k"]))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(knobs["top_p"], 0))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(knobs["min_p"], 0))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp_ext(knobs["temperature"], 0.0, 1.0))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))

        def apply() -> tuple[dict[int, float], int]:
            data = (L.llama_token_data * vocab)()
            for i, x in enumerate(logits.tolist()):
                data[i] = L.llama_token_data(i, x, 0.0)
            cur = L.llama_token_data_array(data, vocab, -1, False)
            L.llama_sampler_apply(chain, ctypes.byref(cur))
            kept = {cur.data[i].id: cur.data[i].p for i in range(cur.size) if cur.data[i].p > 0}
            return kept, cur.data[cur.selected].id

        for t in prompt:
            L.llama_sampler_accept(chain, t)
        for t in output:
            apply()  # the draw of that earlier step
            L.llama_sampler_accept(chain, t)
        return apply()
    finally:
        L.llama_sampler_free(chain)


def random_request(rng: np.random.Generator, vocab: int) -> dict:
    """A llama-server request (its native field names for the penalties) with every knob on or off."""
    request: dict = {
        "temperature": float(rng.choice([0.0, rng.uniform(0.2, 2.0), 1.0])),
        "top_k": int(rng.choice([0, 40, rng.integers(1, vocab + 5)])),
        "top_p": float(rng.choice([1.0, 0.95, rng.uniform(0.05, 1.0)])),
        "min_p": float(rng.choice([0.0, 0.05, rng.uniform(0.0, 0.3)])),
        "repeat_penalty": float(rng.choice([1.0, rng.uniform(0.5, 2.0)])),
        "presence_penalty": float(rng.choice([0.0, rng.uniform(-1.0, 1.0)])),
        "frequency_penalty": float(rng.choice([0.0, rng.uniform(-1.0, 1.0)])),
        "repeat_last_n": int(rng.choice([64, 0, rng.integers(1, 100)])),
    }
    if rng.random() < 0.4:
        request["logit_bias"] = {str(int(t)): float(rng.uniform(-4, 4)) for t in rng.integers(0, vocab, 4)}
    for key in list(request):  # leave some fields out: the engine's defaults then apply
        if rng.random() < 0.15:
            del request[key]
    return request


def distinct_logits(rng: np.random.Generator, vocab: int) -> np.ndarray:
    z = rng.permutation(np.unique(rng.normal(0, 3, 2 * vocab).astype(np.float32)))[:vocab]
    assert z.size == vocab
    return z


def test_chain_kept_sets_probabilities_and_seeded_tokens():
    """320 random cases: the emulation keeps exactly the real chain's tokens with its probabilities
    (float32 tolerance) and draws the same token for the same seed, with prompt + output histories
    longer and shorter than the window."""
    rng = np.random.default_rng(2026)
    e = get("llama.cpp")
    seeded_same = 0
    for case in range(CASES):
        vocab = int(rng.integers(64, 257))
        z = distinct_logits(rng, vocab)
        request = random_request(rng, vocab)
        prompt = rng.integers(0, vocab, int(rng.integers(0, 90))).tolist()
        output = rng.integers(0, vocab, int(rng.integers(0, 12))).tolist()
        # A repeated stretch, so that counts > 1 fall inside and outside the window.
        output += output[:3] * int(rng.integers(0, 3))
        seed = int(rng.integers(0, 2**32 - 1))
        knobs = e.resolve(request)
        want, token = real_chain(z, knobs, prompt, output, seed)
        got = e.probabilities(z, request, prompt, output)
        kept = set(np.flatnonzero(got).tolist())
        assert kept == set(want), (case, request)
        ids = sorted(want)
        np.testing.assert_allclose(got[ids], [want[i] for i in ids], rtol=2e-5, atol=1e-7)
        assert e.sample(z, request, prompt, output, seed) == token, (case, request)
        seeded_same += 1
    assert seeded_same == CASES


def test_penalty_window_is_the_last_64_of_prompt_and_output():
    """Token 5 only in the prompt, 65 tokens ago: outside the default window; token 6 inside it."""
    vocab = 16
    z = np.linspace(1.0, -1.0, vocab).astype(np.float32)
    prompt = [5] + [7] * 60
    output = [6, 8, 8, 8]  # 65 tokens after token 5
    request = {"repeat_penalty": 2.0, "frequency_penalty": 0.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    request["temperature"] = 1.0
    e = get("llama.cpp")
    knobs = e.resolve(request)
    want, _ = real_chain(z, knobs, prompt, output, seed=1)
    got = e.probabilities(z, request, prompt, output)
    np.testing.assert_allclose(got, [want[i] for i in range(vocab)], rtol=2e-5)
    trace = e.trace(z, request, prompt, output)
    penalised = trace.stage_logits[1] != trace.input_logits
    assert penalised[6] and penalised[7] and penalised[8] and not penalised[5]
    # Token 7: 60 occurrences in the prompt, all inside the window (only token 5 fell out): the
    # frequency penalty counts the prompt too (not OpenAI's "sampled so far").
    z7 = float(z[7])
    expected7 = (z7 / 2.0 if z7 > 0 else z7 * 2.0) - 60 * 0.5
    assert trace.stage_logits[2][7] == pytest.approx(expected7, rel=1e-6)


def test_temperature_zero_keeps_the_first_maximum_and_still_draws():
    e = get("llama.cpp")
    z = np.array([0.5, 2.0, 1.0, -1.0], dtype=np.float32)
    knobs = e.resolve({"temperature": 0.0})
    want, token = real_chain(z, knobs, [], [], seed=3)
    assert want == {1: 1.0} and token == 1
    assert e.probabilities(z, {"temperature": 0.0}).tolist() == [0.0, 1.0, 0.0, 0.0]


def test_server_clamps_and_rejections():
    """tools/server/server-schema.cpp: set_limits clamps, set_hard_limits rejects."""
    e = get("llama.cpp")
    k = e.resolve({"top_k": -1, "top_p": 1.5, "min_p": -0.2, "temperature": -1.0})
    assert (k["top_k"], k["top_p"], k["min_p"], k["temperature"]) == (0, 1.0, 0.0, 0.0)
    with pytest.raises(ParamError) as caught:
        e.resolve({"repeat_last_n": -1})
    assert caught.value.param == "repeat_last_n" and "0 <= value" in str(caught.value)
    with pytest.raises(ParamError):
        e.resolve({"repeat_penalty": 0.0})
    # logit_bias `false` bans a token (-inf), as the real logit_bias sampler then does.
    z = np.array([1.0, 2.0, 0.5], dtype=np.float32)
    knobs = e.resolve({"logit_bias": {"1": False}, "temperature": 1.0})
    want, _ = real_chain(z, knobs, [], [], seed=5)
    assert set(want) == {0, 2} and e.probabilities(z, {"logit_bias": {"1": False}})[1] == 0.0
    # repetition_penalty is not a llama-server field: silently ignored.
    assert e.resolve({"repetition_penalty": 1.5})["repetition_penalty"] == 1.0
    assert e.ignored_fields({"repetition_penalty": 1.5, "top_k": 3}) == ["repetition_penalty"]


def test_ollama_is_the_same_chain_with_its_own_defaults():
    """Ollama's OpenAI route: T and top_p default to 1.0, top_k 40 stays (not an OpenAI field),
    min_p 0, window 64; the chain is llama-server's."""
    rng = np.random.default_rng(7)
    e = get("ollama")
    for _ in range(20):
        z = distinct_logits(rng, 100)
        request = {"temperature": float(rng.uniform(0.3, 1.5)), "presence_penalty": 0.5, "top_k": 3}
        prompt, output = rng.integers(0, 100, 30).tolist(), rng.integers(0, 100, 5).tolist()
        knobs = e.resolve(request)
        assert (knobs["top_k"], knobs["top_p"], knobs["min_p"], knobs["repeat_last_n"]) == (40, 1.0, 0.0, 64)
        want, token = real_chain(z, knobs, prompt, output, seed=11)
        got = e.probabilities(z, request, prompt, output)
        assert set(np.flatnonzero(got).tolist()) == set(want)
        assert e.sample(z, request, prompt, output, 11) == token


def test_mt19937_matches_the_published_generator():
    """The C++ standard fixes the 10000th output of default-seeded std::mt19937 (seed 5489) at
    4123659995; the first output for seed 5489 is 3499211612."""
    words = mt19937_words(5489, 10000)
    assert words[0] == 3499211612 and words[-1] == 4123659995
    u = uniform_doubles(5489, 1)[0]
    assert u == (3499211612 + 581869302 * 2.0**32) / 2.0**64


def test_large_vocabularies_take_the_same_paths_as_the_real_chain():
    """V = 6000: top_p on more than 1024 unsorted candidates takes llama.cpp's bucket partial sort
    (256 first, then all), min_p its unsorted path, and dist walks the sorted or the id order."""
    rng = np.random.default_rng(11)
    e = get("llama.cpp")
    requests = [
        {"top_k": 0, "top_p": 0.9, "min_p": 0.0, "temperature": 0.7},
        {"top_k": 0, "top_p": 1.0, "min_p": 0.01, "temperature": 1.3},
        {"top_k": 0, "top_p": 0.999, "min_p": 0.0, "temperature": 1.0},
        {"top_k": 3000, "top_p": 0.5, "min_p": 0.0, "temperature": 1.0},
        {},
    ]
    for request in requests:
        z = distinct_logits(rng, 6000) / 3  # flat: top_p needs many ranks
        prompt, output = rng.integers(0, 6000, 40).tolist(), rng.integers(0, 6000, 3).tolist()
        want, token = real_chain(z, e.resolve(request), prompt, output, seed=99)
        got = e.probabilities(z, request, prompt, output)
        assert set(np.flatnonzero(got).tolist()) == set(want), request
        ids = sorted(want)
        np.testing.assert_allclose(got[ids], [want[i] for i in ids], rtol=2e-5, atol=1e-9)
        assert e.sample(z, request, prompt, output, 99) == token, request
