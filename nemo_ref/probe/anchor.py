"""Finding an anchor: a prompt whose next-token distribution is informative (docs/probe.md).

Built-in prompts are tried in turn with ``max_tokens=1, temperature=1, top_logprobs=K``. A prompt
qualifies when its top token has probability in [0.2, 0.8], with at least four tokens >= 0.02 (all
K when K < 4) and a top-K mass >= 0.9; the first whose top-K mass is also >= STRONG_MASS is kept at
once, else the qualifying prompt with the largest top-K mass once every prompt was tried. The
invisible tail matters: the penalty test lowers the likeliest tokens, and an engine that truncates
by default (llama.cpp's top_k 40 and min_p 0.05) then keeps or cuts tail tokens nobody has seen,
so with a tail of ~0.1 every penalty design's prediction depends on it and test 5 has nothing to
measure (seen on a model whose likely tokens include partial characters, U+FFFD: those prompts are
skipped, and the first survivor held only 0.91). The kept prompt is asked twice more: the mean
logprobs are the anchor, and the largest difference between repeats is reported (batching makes
logits wobble). When no prompt qualifies, the best near-miss is used and the report says the
anchor is weak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .client import Endpoint, Reply
from .world import Context

PROMPTS = (
    "Pick a colour: red, green, blue, yellow. I pick",
    "Heads or tails? I say",
    "Coffee or tea? I would like",
    "Roll a die. I rolled a",
    "Choose a number from 1 to 5:",
    "The best pet is a",
    "My favourite fruit is the",
    "Answer with yes or no:",
    "Monday, Tuesday,",
    "The opposite of hot is",
    "Once upon a",
    "The sky is",
    "One, two, three,",
    "Cats or dogs? I prefer",
    "The first letter of the alphabet is",
    "North, south, east or west? Go",
)


STRONG_MASS = 0.98  # top-K mass that leaves the tail too small to decide a penalised prediction


@dataclass
class AnchorResult:
    context: Context | None
    qualified: bool
    tried: int
    k: int  # top_logprobs the endpoint accepts (20, 5 or 2)
    note: str = ""


def _score(top: list[tuple[str, float]]) -> tuple[bool, float]:
    """(meets the criteria, closeness for choosing a near-miss)."""
    p = [math.exp(lp) for _, lp in top]
    if not p:
        return False, -1.0
    texts = [t for t, lp in top if math.exp(lp) >= 0.005]
    if any("\ufffd" in t for t in texts) or len(set(texts)) < len(texts):
        return False, -1.0  # a token text that names several tokens: draws could not be told apart
    need = min(4, len(p))
    plausible = sum(1 for x in p if x >= 0.02)
    mass = sum(p)
    ok = 0.2 <= p[0] <= 0.8 and plausible >= need and mass >= 0.9
    closeness = -abs(p[0] - 0.5) + 0.1 * min(plausible, need) + mass
    return ok, closeness


def top_of(reply: Reply) -> list[tuple[str, float]]:
    if not reply.ok or not reply.choices:
        return []
    seen: dict[str, float] = {}
    for t, lp in reply.choices[0].top:
        if t not in seen and lp > -1000:
            seen[t] = lp
    return sorted(seen.items(), key=lambda kv: -kv[1])


def accepted_k(endpoint: Endpoint, prompt: str) -> tuple[int, Reply]:
    """The largest top_logprobs of (20, 5, 2) the endpoint accepts, and that reply."""
    reply = None
    for k in (20, 5, 2):
        reply = endpoint.generate(prompt, {"temperature": 1.0}, top_logprobs=k)
        if reply.ok and reply.choices and reply.choices[0].top:
            return k, reply
        if reply.status not in (400, 422):
            break
    return 0, reply


def find_anchor(endpoint: Endpoint, prompts: tuple[str, ...] = PROMPTS, repeats: int = 3) -> AnchorResult:
    k, first = accepted_k(endpoint, prompts[0])
    if not k:
        return AnchorResult(None, False, 1, 0, f"no logprobs: {first.error if first else 'no reply'}")
    best: tuple[float, str, list] | None = None  # the closest near-miss
    kept: tuple[float, str, list] | None = None  # the qualifying prompt with the most top-K mass
    tried = 0
    for i, prompt in enumerate(prompts):
        reply = first if i == 0 else endpoint.generate(prompt, {"temperature": 1.0}, top_logprobs=k)
        tried += 1
        top = top_of(reply)
        ok, closeness = _score(top)
        if best is None or closeness > best[0]:
            best = (closeness, prompt, top)
        if ok:
            mass = sum(math.exp(lp) for _, lp in top)
            if kept is None or mass > kept[0]:
                kept = (mass, prompt, top)
            if mass >= STRONG_MASS:
                break
    if kept is not None:
        mass, prompt, top = kept
        note = "" if mass >= STRONG_MASS else f"the anchor's top {k} tokens hold {mass:.3f}: a heavy tail"
        return AnchorResult(measure(endpoint, prompt, k, top, repeats), True, tried, k, note)
    assert best is not None
    _, prompt, top = best
    note = f"no built-in prompt met the anchor criteria; using the closest ({prompt!r}): weak anchor"
    return AnchorResult(measure(endpoint, prompt, k, top, repeats), False, tried, k, note)


def measure(
    endpoint: Endpoint, prompt: str, k: int, top: list[tuple[str, float]], repeats: int = 3
) -> Context:
    """The anchor's mean logprobs over ``repeats`` requests (the first one is ``top``)."""
    tokens = [t for t, _ in top]
    rows = [np.array([lp for _, lp in top])]
    for _ in range(repeats - 1):
        again = dict(top_of(endpoint.generate(prompt, {"temperature": 1.0}, top_logprobs=k)))
        if all(t in again for t in tokens):
            rows.append(np.array([again[t] for t in tokens]))
    stack = np.stack(rows)
    spread = float((stack.max(0) - stack.min(0)).max()) if len(rows) > 1 else 0.0
    return Context(prompt, tokens, stack.mean(0), spread)
