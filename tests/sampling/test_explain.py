"""The --explain table: stage counts and probabilities derived by hand on a small example, and the
drawn token is the one generation draws for the same (seed, choice, step)."""

from __future__ import annotations

import math

from nemo_ref.sampling import reference as ref
from nemo_ref.sampling.explain import explain
from nemo_ref.sampling.params import SamplingParams

LOGITS = [0.0, math.log(2.0), math.log(4.0), math.log(8.0), -5.0, -6.0]


def lines_by_first_word(text: str) -> dict[str, str]:
    return {line.split()[0]: line for line in text.splitlines() if line.strip()}


def test_stage_counts_probabilities_and_drawn_token():
    params = SamplingParams(top_k=3, min_p=0.2, temperature=1.0)
    text = explain(LOGITS, params, [], [], step=4, choice=1, seed=10, top=4, token_str=lambda i: f"<{i}>")
    rows = lines_by_first_word(text)
    # min_p 0.2 of p_max: keeps weights 8, 4, 2 (2/8 = 0.25 >= 0.2), drops 1/8 and below.
    assert rows["min_p"].split()[-1] == "3" and rows["top_k"].split()[-1] == "3"
    assert rows["top_p"].split()[-2:] == ["off", "3"]  # skipped: nothing more removed
    # token 3: raw p = 8 / (15 + e^-5 + e^-6), final p = 8 / 14
    raw3 = 8 / (15 + math.exp(-5) + math.exp(-6))
    assert (f"{raw3:.4f}" in rows["3"] and rows["3"].split()[-1] != "<-") or "<3>" in rows["3"]
    assert rows["3"].split()[1] == "'<3>'" and f"{8 / 14:.4f}" in rows["3"]
    assert rows["0"].split()[-1] == "-"  # removed by min_p: shown as "-"
    token = ref.sample(LOGITS, params, [], [], step=4, choice=1, seed=10).token
    assert text.splitlines()[0].startswith("step 4, choice 1, seed 10: u = ")
    assert f"-> token {token} '<{token}>'" in text.splitlines()[0]
    assert rows[str(token)].endswith("<-")
    assert sum(line.endswith("<-") for line in text.splitlines()) == 1


def test_greedy_skips_the_later_stages():
    text = explain(LOGITS, SamplingParams(temperature=0), [], [], step=0, choice=0, seed=0)
    rows = lines_by_first_word(text)
    assert "-> token 3 (p = 1.0000)" in text
    assert "skipped" in rows["top_p"] and "greedy" in rows["temperature"]
    assert rows["3"].endswith("1.0000  <-")
