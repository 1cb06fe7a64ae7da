"""The probe's parts, each against an oracle nobody here wrote where one exists: the chi-square
survival function against scipy, the client's budget and retries against a scripted transport,
the predictions against the emulations run on a full vocabulary."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest

from nemo_ref.probe import stats
from nemo_ref.probe.client import BudgetSpent, Endpoint
from nemo_ref.probe.world import Context, predict, separation
from nemo_ref.sampling import engines


@pytest.mark.parametrize("df", [1, 2, 3, 7, 30])
@pytest.mark.parametrize("x", [0.01, 0.5, 1.0, 3.0, 10.0, 40.0, 120.0])
def test_chi2_sf_matches_scipy(x, df):
    scipy_stats = pytest.importorskip("scipy.stats")
    assert stats.chi2_sf(x, df) == pytest.approx(scipy_stats.chi2.sf(x, df), rel=1e-9, abs=1e-300)


def test_g_test_accepts_a_fair_sample_and_rejects_a_wrong_one():
    probs = [0.5, 0.3, 0.2]
    fair = [502, 298, 200]
    g, df = stats.g_statistic(fair, probs)
    assert df == 2 and stats.chi2_sf(g, df) > 0.5
    g, df = stats.g_statistic([700, 200, 100], probs)
    assert stats.chi2_sf(g, df) < 1e-12
    # A draw in a cell predicted impossible rejects at once, and is counted as impossible.
    g, df = stats.g_statistic([60, 40, 1], [0.6, 0.4, 0.0])
    assert stats.chi2_sf(g, df) < 1e-3
    ll, impossible = stats.log_likelihood([60, 40, 1], [0.6, 0.4, 0.0])
    assert impossible == 1 and ll == pytest.approx(60 * math.log(0.6) + 40 * math.log(0.4) + math.log(1e-6))


def _endpoint(handler, budget):
    ep = Endpoint("http://probe.test/v1", "m", budget=budget, sleep=lambda s: None)
    ep._http = httpx.Client(transport=httpx.MockTransport(handler))
    return ep


def _ok_body():
    return {
        "choices": [
            {
                "index": 0,
                "text": " red",
                "finish_reason": "length",
                "logprobs": {"tokens": [" red"], "top_logprobs": [{" red": -0.5, " blue": -1.2}]},
            }
        ],
        "usage": {"completion_tokens": 1},
    }


def test_client_retries_5xx_and_429_within_the_budget_and_reports_them():
    answers = iter([503, 429, 200])

    def handler(request):
        status = next(answers)
        return httpx.Response(status, json=_ok_body() if status == 200 else {"error": {"message": "busy"}})

    ep = _endpoint(handler, budget=10)
    reply = ep.generate("Pick", {"temperature": 1.0}, top_logprobs=2)
    assert reply.ok and reply.choices[0].token == " red" and reply.choices[0].top[0] == (" red", -0.5)
    assert ep.requests == 3 and len(ep.retries) == 2 and "503" in ep.retries[0] and "429" in ep.retries[1]


def test_client_never_exceeds_the_budget():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(500, json={"error": {"message": "down"}})

    ep = _endpoint(handler, budget=4)
    reply = ep.generate("Pick")
    assert reply.status == 500 and len(calls) == 4 and ep.requests == 4
    with pytest.raises(BudgetSpent):
        ep.generate("Pick")
    assert len(calls) == 4


def test_client_falls_back_to_chat_when_completions_is_missing():
    def handler(request):
        if request.url.path == "/v1/completions":
            return httpx.Response(404, json={"error": {"message": "no such route"}})
        body = {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " red"},
                    "finish_reason": "length",
                    "logprobs": {"content": [{"token": " red", "logprob": -0.5, "top_logprobs": []}]},
                }
            ]
        }
        return httpx.Response(200, json=body)

    ep = _endpoint(handler, budget=5)
    reply = ep.generate("Pick")
    assert ep.route == "chat" and reply.ok and reply.choices[0].token == " red"


def _context(probs):
    lp = np.log(np.asarray(probs, dtype=np.float64))
    return Context("p", [f"t{i}" for i in range(len(probs))], lp, 0.0)


def test_predictions_equal_the_emulation_on_a_full_vocabulary():
    """A design that keeps only known tokens predicts what the emulation gives on real logits
    whose tail is anything below the known tokens (here: a random tail of 131072 - 8 tokens)."""
    rng = np.random.default_rng(0)
    known = np.array([0.42, 0.21, 0.12, 0.08, 0.05, 0.03, 0.02, 0.015])
    tail_mass = 1 - known.sum()
    tail = rng.dirichlet(np.ones(131072 - 8)) * tail_mass
    tail = np.minimum(tail, known[-1] * 0.99)
    z = np.log(np.concatenate([known, tail]))
    ctx = _context(known)
    for name in ("vllm", "llama.cpp", "sglang", "hf", "tgi"):
        e = engines.get(name)
        for design in (
            {"temperature": 0.5, "top_p": 0.75},
            {"temperature": 1.5, "top_k": 3},
            {"temperature": 1.0, "min_p": 0.3},
        ):
            pred = predict(e, ctx, design)
            if pred is None or pred.rejects:
                continue
            full = e.probabilities(z + 3.0, design)
            want = np.append(full[:8], full[8:].sum())
            assert np.abs(np.asarray(pred.by_offset[0]) - want).sum() < 0.02, (name, design)


def test_orders_that_differ_are_separated_and_rejections_count():
    ctx = _context([0.45, 0.27, 0.08, 0.05, 0.03, 0.02])
    design = {"temperature": 0.5, "top_p": 0.5}
    vllm, llama = predict(engines.get("vllm"), ctx, design), predict(engines.get("llama.cpp"), ctx, design)
    # vLLM tempers first (top token ~0.7 >= 0.5: it alone survives); llama.cpp cuts the
    # untempered distribution (0.45 < 0.5: two survive), then tempers.
    assert separation(vllm, llama) > 0.15
    tgi = predict(engines.get("tgi"), ctx, {"temperature": 1.0, "top_p": 1.0})
    assert (
        tgi.rejects
        and separation(tgi, predict(engines.get("vllm"), ctx, {"temperature": 1.0, "top_p": 1.0})) == 1.0
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--extra-body", "{not json"], "--extra-body is not valid JSON"),
        (["--extra-body", "[1]"], "--extra-body must be a JSON object"),
        (["--api-key-env", "NEMO_REF_PROBE_UNSET_VAR"], "NEMO_REF_PROBE_UNSET_VAR is not set"),
        (["--only", "order,bogus"], "unknown tests ['bogus']"),
        (["--budget", "3"], "--budget must be >= 10"),
    ],
)
def test_probe_command_checks_its_arguments(argv, message, capsys, monkeypatch):
    from nemo_ref.cli import main

    monkeypatch.delenv("NEMO_REF_PROBE_UNSET_VAR", raising=False)
    assert main(["probe", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", *argv]) == 2
    assert message in capsys.readouterr().err
