"""The probe never identifies an engine on properties it did not test (docs/probe.md, "The
likelihood test, in plain words"), and its anchor leaves the penalty test something to measure.

The endpoint here is an in-process fake (httpx.MockTransport): a 316-token vocabulary whose
next-token distribution depends only on which built-in anchor prompt the prompt ends with, sampled
by an engine emulation (nemo_ref.sampling.engines) with the emulation's own validation. No model,
no server: each probe takes about a second. The endpoint under test is bench_probe.py's deliberate
mix (llama.cpp's chain with vLLM's penalty scopes), which no emulated engine is: a probe that
tests the penalties rejects them all; one that cannot test them must not name llama.cpp.

Before: the anchor was the first prompt that qualified, even with a tenth of the mass in the
invisible tail; the penalty designs' predictions then all depended on that tail, test 5 measured
nothing, and the verdict was "identified: llama.cpp" on the order test alone (seen on the embedded
model with ASCII byte tokens ranked among the top merges, where partial-character tokens
disqualified most anchor prompts).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")

from nemo_ref.probe import probe  # noqa: E402
from nemo_ref.probe.anchor import PROMPTS  # noqa: E402
from nemo_ref.sampling.params import ParamError  # noqa: E402
from tests.support import load_script  # noqa: E402

CORE = ("capabilities", "logprobs_mode", "greedy", "validation", "order", "penalties")
HEAD = [f" w{i:02d}" for i in range(20)]  # ids 1..20: the likely tokens
TAIL = [f" t{i:03d}" for i in range(200)]  # ids 21..220: the tail
CHARS = [chr(c) for c in range(32, 127)]  # ids 221..315: what prompt text is tokenised into
TEXTS = ["<s>", *HEAD, *TAIL, *CHARS]
WORD_ID = {t: i for i, t in enumerate(TEXTS) if i <= len(HEAD) + len(TAIL)}
# (head, tail mass): STRONG a geometric head; WEAK the head the embedded model's anchor prompt had
# with the ASCII-byte prior, whose top 20 held 0.908 (the penalty test then measured nothing).
STRONG = (0.55 ** np.arange(len(HEAD)), 0.004)
WEAK = (
    np.array([372, 180, 93, 53, 35, 25, 23, 19, 19, 11, 11, 9, 9, 9, 8, 8, 7, 7, 6, 5], dtype=float),
    0.092,
)
REQUEST_FIELDS = {"model", "prompt", "n", "seed", "stop", "logprobs", "max_tokens"}


def _mix():
    module = load_script("bench_probe")
    return module.inconsistent_engine()


def _logits(head: np.ndarray, tail_mass: float) -> np.ndarray:
    """The 20 head tokens' probabilities ~ ``head``, then 200 equal tail tokens holding
    ``tail_mass``; the BOS and the character tokens practically never."""
    head = head / head.sum() * (1 - tail_mass)
    p = np.concatenate([[1e-30], head, np.full(len(TAIL), tail_mass / len(TAIL)), np.full(len(CHARS), 1e-30)])
    return np.log(p)


class Fake(httpx.BaseTransport):
    """/v1/completions and /tokenize over the toy vocabulary, sampled by ``engine``; prompts that
    end with one of ``weak`` have the WEAK distribution (top 0.37, tail 0.092), every other prompt
    the STRONG one (top 0.45, tail 0.004)."""

    def __init__(self, engine, weak: tuple[str, ...]):
        self.engine, self.weak, self.calls = engine, weak, 0

    @staticmethod
    def tokenize(text: str, special: bool) -> list[int]:
        ids = (
            [WORD_ID[text]]
            if text in WORD_ID
            else [221 + CHARS.index(c if c in CHARS else "?") for c in text]
        )
        return [0, *ids] if special else ids

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/tokenize":
            return httpx.Response(
                200, json={"tokens": self.tokenize(body["prompt"], body["add_special_tokens"])}
            )
        prompt = body["prompt"]
        ids = self.tokenize(prompt, True) if isinstance(prompt, str) else list(prompt)
        text = "".join(TEXTS[i] for i in ids if i)
        fields = {k: v for k, v in body.items() if k not in REQUEST_FIELDS}
        unknown = [k for k in fields if k not in self.engine.spec.fields]
        if unknown or body.get("logprobs", 0) > 20:
            return httpx.Response(400, json={"error": {"message": f"unsupported: {unknown or 'logprobs'}"}})
        try:
            self.engine.resolve(fields)
        except ParamError as e:
            return httpx.Response(400, json={"error": {"message": str(e)}})
        z = _logits(*(WEAK if any(text.endswith(w) for w in self.weak) else STRONG))
        probs = self.engine.probabilities(z, fields, ids, ())
        lp = self.engine.logprobs(z, fields, ids, ())
        top = {TEXTS[i]: float(lp[i]) for i in np.argsort(-lp)[: body.get("logprobs", 1)] if lp[i] > -1e9}
        self.calls += 1
        rng = np.random.default_rng([body.get("seed") or 0, self.calls])
        choices = []
        for i in range(body.get("n", 1)):
            token = int(rng.choice(len(probs), p=probs / probs.sum()))
            logprobs = {"tokens": [TEXTS[token]], "top_logprobs": [top]}
            choices.append(
                {"index": i, "text": TEXTS[token], "logprobs": logprobs, "finish_reason": "length"}
            )
        usage = {"completion_tokens": len(choices)}
        return httpx.Response(200, json={"choices": choices, "usage": usage})


def _probe(engine, weak: tuple[str, ...]) -> dict:
    return probe("http://fake", "m", budget=300, only=CORE, transport=Fake(engine, weak))


def test_fake_endpoint_is_identified_as_its_engine():
    """The control: the same fake, sampling as llama.cpp, is identified as llama.cpp."""
    from nemo_ref.sampling import engines

    d = _probe(engines.get("llama.cpp"), weak=())
    assert d["verdict"] == "identified" and "llama.cpp" in d["answer"], (d["verdict"], d["answer"])
    assert "penalty_scope" in d["properties"]


def test_the_anchor_skips_a_heavy_tailed_first_prompt():
    """The first built-in prompt qualifies but has 0.09 in its tail: the anchor goes on to a prompt
    whose top 20 hold >= 0.98, test 5 measures the penalties, and the mix fits no engine."""
    d = _probe(_mix(), weak=(PROMPTS[0],))
    anchor = d["properties"]["anchor"]
    assert anchor["observed"]["prompt"] != PROMPTS[0]
    assert "penalty_scope" in d["properties"], d["not_testable"]
    assert d["verdict"] == "no engine fits", (
        d["verdict"],
        d["answer"],
        d["properties"].get("order_truncation"),
    )


def test_untested_penalties_make_the_verdict_inconclusive():
    """Every prompt has a heavy tail: no penalty design is usable, the penalty scope goes untested,
    and the mix, whose order is llama.cpp's, is not called llama.cpp with confidence."""
    d = _probe(_mix(), weak=PROMPTS)
    assert "penalty_scope" not in d["properties"]
    assert d["verdict"] == "inconclusive", (d["verdict"], d["answer"])
    assert "invisible tail" in d["not_testable"].get("penalties", ""), d["not_testable"]
    reason = d["properties"]["order_truncation"]["evidence"]["reason"]
    assert "penalty scope untested" in reason, reason
    assert any("hold 0.9" in n for n in d["notes"]), d["notes"]  # the anchor says its tail is heavy
    assert math.isfinite(d["ranking"][0]["log_likelihood"])


def test_an_engine_must_fit_every_context():
    """Ten designs at the anchor fit engine "a"; at the near penalty prompt 26 of 32 draws went to
    the token it calls a coin flip (G = 13.5 on 1 df, p = 2.4e-4). Pooled, the misfit drowns in
    the anchor's degrees of freedom (p = 0.26); per context it rejects "a", as the near prompt's
    own sequential run did."""
    from nemo_ref.probe import likelihood, stats
    from nemo_ref.probe.world import Prediction

    def run(counts):
        preds = {"a": Prediction([np.array([0.5, 0.5])]), "b": Prediction([np.array([0.8, 0.2])])}
        return likelihood.DesignRun({"temperature": 1.0}, preds, np.array(counts), status=200)

    runs = [run([16, 16]) for _ in range(10)] + [run([26, 6])]
    pooled = {s.engine: s.p_value for s in likelihood.score(runs, ["a", "b"])}
    assert pooled["a"] > 0.1  # what the pooled test said
    per_context = {s.engine: s.p_value for s in likelihood.score(runs, ["a", "b"], [0] * 10 + [1])}
    assert per_context["a"] < stats.REJECT_P, per_context
    assert per_context["a"] == pytest.approx(
        stats.chi2_sf(2 * (26 * math.log(26 / 16) + 6 * math.log(6 / 16)), 1)
    )
