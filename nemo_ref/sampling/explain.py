"""`--explain N`: what each sampling step did to the most likely tokens of one decode step.

Built on reference.pipeline, so the table shows exactly the reference's stages; the drawn token is
the reference's too (the same (seed, choice, step) draw as generation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from . import reference
from .params import SamplingParams
from .rng import uniform

# (column title, pipeline stage whose logits it shows); "penalties" is S2 and S3 together.
COLUMNS = [
    ("raw", "raw"),
    ("bias", "bias"),
    ("penalties", "presence_frequency"),
    ("temperature", "temperature"),
    ("min_p", "min_p"),
    ("top_k", "top_k"),
    ("top_p", "top_p"),
]


def _settings(p: SamplingParams, masked: bool) -> dict[str, str]:
    def off(on: bool, text: str) -> str:
        return text if on else "off"

    settings = {
        "raw": "grammar mask (S0)" if masked else "",
        "bias": off(bool(p.logit_bias), f"{len(p.logit_bias)} token(s) biased"),
        "penalties": f"rep {p.repetition_penalty:g}, pres {p.presence_penalty:g}, "
        f"freq {p.frequency_penalty:g}",
        "temperature": f"T={p.temperature:g}",
        "min_p": off(p.min_p > 0, f"{p.min_p:g}"),
        "top_k": off(p.top_k > 0, f"{p.top_k}"),
        "top_p": off(p.top_p < 1, f"{p.top_p:g}"),
    }
    if p.greedy:  # S4 returns before S5..S9 run
        settings.update(temperature="T=0: greedy (S4)", min_p="skipped", top_k="skipped")
        settings.update(top_p="skipped")
    return settings


def _cell(prob: float | None) -> str:
    if prob is None:
        return "·"  # stage not run (greedy skips S5..S9)
    if prob == 0:
        return "-"
    # Small probabilities keep their magnitude (a random-weight model's are ~1/131072).
    return f"{prob:.4f}" if prob >= 1e-3 else f"{prob:.2e}"


def explain(
    logits: Any,
    params: SamplingParams,
    prompt_tokens: Sequence[int],
    output_tokens: Sequence[int],
    step: int,
    choice: int,
    seed: int,
    top: int = 8,
    *,
    token_str: Callable[[int], str] | None = None,
    allowed: Sequence[bool] | None = None,
) -> str:
    """A plain-text table: the `top` most likely tokens before and after sampling (plus the drawn
    one), their probability after each stage, and how many tokens each stage left."""
    stages = dict(reference.pipeline(logits, params, prompt_tokens, output_tokens, allowed))
    u = uniform(seed, choice, step)
    last = stages["presence_frequency"] if params.greedy else stages["top_p"]
    if params.greedy:
        token = reference.greedy(last)
        final = [float(i == token) for i in range(len(last))]
    else:
        token = reference.draw(last, u)
        final = reference.softmax(last)
    probs = {name: reference.softmax(stages[key]) for name, key in COLUMNS if key in stages}

    raw_best = [i for i, _ in reference.top_entries(probs["raw"], top)]
    final_best = [i for i, p in reference.top_entries(final, top) if p > 0]
    ids = sorted({*raw_best, *final_best, token}, key=lambda i: (-final[i], -probs["raw"][i], i))

    def label(i: int) -> str:
        return f" {token_str(i)!r}" if token_str else ""

    settings = _settings(params, allowed is not None)
    lines = [
        f"step {step}, choice {choice}, seed {seed}: u = {u:.6f} -> token {token}{label(token)} "
        f"(p = {final[token]:.4f})",
        "",
        f"{'stage':<12} {'setting':<28} tokens left",
    ]
    for name, key in COLUMNS:
        left = sum(x > -math.inf for x in stages[key]) if key in stages else "·"
        lines.append(f"{name:<12} {settings[name]:<28} {left}")
    lines.append("")
    header = f"{'id':>7}  {'token':<14}" + "".join(f"{name:>12}" for name, _ in COLUMNS)
    lines.append(header + f"{'final':>10}  drawn")
    for i in ids:
        cells = "".join(f"{_cell(probs[name][i] if name in probs else None):>12}" for name, _ in COLUMNS)
        piece = label(i).strip()[:14]
        mark = "  <-" if i == token else ""
        lines.append(f"{i:>7}  {piece:<14}{cells}{_cell(final[i]):>10}{mark}")
    return "\n".join(lines)
