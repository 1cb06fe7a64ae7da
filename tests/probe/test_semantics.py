"""``nemo-ref serve --semantics ENGINE``: the server samples, validates and reports logprobs as the
engine's emulation (nemo_ref.sampling.engines) says, on the embedded model's own logits.

Oracles: the emulations (tested against the engines' own code by tests/engines/), applied
here directly to the model's logits for the same prompt ids; the server must reproduce their draw
exactly (llama.cpp's seeded draw; an inverse-CDF draw with U(seed, choice, 0) elsewhere).
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

from nemo_ref.sampling import engines
from nemo_ref.sampling.rng import uniform
from nemo_ref.server.semantics import Semantics
from nemo_ref.tokenizer import load_tokenizer
from tests.support import load_script

PROMPT = [1, 5000, 7000, 9000, 11000]  # token ids: the completions route uses them as given
SEMANTICS = ("vllm", "llama.cpp", "tgi", "sglang", "hf")


def _bench():
    module = load_script("bench_probe")
    return module


@pytest.fixture(scope="module")
def setup():
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from nemo_ref.demo import embedded_model
    from nemo_ref.tokenizer import load_tokenizer

    model = embedded_model("nemo-tiny", seed=0)
    tok = load_tokenizer()
    urls, stops = {}, []
    for name in SEMANTICS:
        url, stop = _bench().serve_in_thread(model, tok, name, max_batch=8)
        urls[name] = url
        stops.append(stop)
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT]), last_only=True)[0, -1].double().numpy()
    yield urls, logits
    for stop in stops:
        stop()


def _complete(url: str, **body) -> httpx.Response:
    return httpx.post(
        url + "/v1/completions", json={"model": "m", "prompt": PROMPT, "max_tokens": 1, **body}, timeout=60
    )


def test_health_and_models_name_the_semantics(setup):
    urls, _ = setup
    for name, url in urls.items():
        assert httpx.get(url + "/health").json()["semantics"]["engine"] == name
        card = httpx.get(url + "/v1/models").json()["data"][0]
        assert card["semantics"]["engine"] == name
        assert card["semantics"]["logprobs_mode"] == engines.get(name).logprobs_mode


@pytest.mark.parametrize(
    ("name", "field", "value", "status"),
    [
        ("vllm", "top_k", -2, 400),  # vLLM: -1 or 0 disables; < -1 is an error
        ("vllm", "top_k", -1, 200),
        ("vllm", "temperature", 2.5, 400),
        ("llama.cpp", "temperature", 2.5, 200),  # llama-server takes any temperature
        ("llama.cpp", "top_k", -2, 200),  # <= 0 is off
        ("llama.cpp", "repeat_penalty", 1.3, 200),  # its own field name
        ("vllm", "repeat_penalty", 1.3, 400),  # not a vLLM field: unknown, as nemo_ref says
        ("tgi", "top_p", 1.0, 400),  # TGI: top_p must lie in (0, 1)
        ("tgi", "min_p", 0.5, 200),  # ignored on TGI's route
        ("hf", "temperature", 0, 400),  # transformers: temperature 0 with sampling is an error
        ("sglang", "top_k", 0, 400),
    ],
)
def test_validation_is_the_engines(setup, name, field, value, status):
    urls, _ = setup
    r = _complete(urls[name], **{field: value})
    assert r.status_code == status, r.text
    if status == 400:
        err = r.json()["error"]
        assert err["param"] == field and err["type"] == "invalid_request_error"
        if "Unrecognized" in err["message"]:  # a field the engine does not have
            assert field not in engines.get(name).spec.fields
        else:  # the engine's own answer
            assert name in err["message"]
            with pytest.raises(engines.ParamError):
                engines.get(name).resolve({field: value})


@pytest.mark.parametrize("name", SEMANTICS)
def test_draws_are_the_emulations(setup, name):
    """n=8 seeded choices: each token is the emulation's draw for that seed and choice."""
    urls, logits = setup
    e = engines.get(name)
    request = {"temperature": 0.7, "top_p": 0.9}
    r = _complete(urls[name], n=8, seed=123, **request)
    assert r.status_code == 200, r.text
    got = [c["text"] for c in r.json()["choices"]]
    tok = load_tokenizer()
    probs = e.probabilities(logits, request, PROMPT, ())
    expected = []
    for choice in range(8):
        if e.seed_reproducible:  # choice 0 draws with the request's seed itself
            seed = 123 if choice == 0 else Semantics(name)._seed(123, choice)
            token = e.sample(logits, request, PROMPT, (), seed)
        else:
            running = np.cumsum(probs)
            token = int(np.searchsorted(running, uniform(123, choice, 0) * running[-1], side="right"))
        expected.append(tok.decode([token]))
    assert got == expected


@pytest.mark.parametrize("name", ["vllm", "sglang", "tgi"])
def test_logprobs_are_the_engines_mode(setup, name):
    urls, logits = setup
    e = engines.get(name)
    request = {"temperature": 0.5, "top_p": 0.5}
    r = _complete(urls[name], logprobs=5, seed=1, **request)
    assert r.status_code == 200, r.text
    top = list(r.json()["choices"][0]["logprobs"]["top_logprobs"][0].values())
    want = np.sort(e.logprobs(logits, request, PROMPT, ()))[::-1][:5]
    want = np.where(np.isfinite(want), want, -9999.0)
    assert np.allclose(top, want, atol=1e-9)


def test_serve_rejects_an_unknown_semantics(capsys):
    pytest.importorskip("uvicorn")
    from nemo_ref.cli import main

    assert main(["serve", "--semantics", "nope", "--preset", "nemo-tiny"]) == 2
    err = capsys.readouterr().err
    assert "--semantics must be one of" in err and "llama.cpp" in err
