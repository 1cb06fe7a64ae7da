"""Test 4, order and truncation (and, on the same footing, step-0 penalties): the sequential
likelihood test of every engine emulation against draws from the endpoint (docs/probe.md).

For the chosen designs (world.choose_designs), draws are requested round-robin (``n`` per request
when the endpoint has ``n``, seeds varied when it has ``seed``), each draw is mapped to its cell,
and every engine is scored:

- log-likelihood: the sum over designs of the multinomial log-likelihood (floor 1e-6), maximised
  over the logit offset (world.OFFSETS) jointly for all designs; a design the endpoint rejects
  (400) while the engine accepts it, or the reverse, costs ln(1e-6) once;
- fit: a G-test of the same counts per context (p-value: the worst context's); p < 0.001
  rejects the engine.

It stops when the best engine leads the best engine it is not tied with by ln(1000) and is not
rejected ("identified"), when every engine is rejected ("no engine fits"), or when the draws or
the budget run out ("inconclusive"). Engines whose predictions agree (total variation < TIE) on
every design the endpoint accepted are tied: reported together, never split. An identification
covers only what was tested: when a requested test measured nothing, ``withhold`` makes it
"inconclusive" (order.py applies it to the penalty test).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import stats
from .client import BudgetSpent, Endpoint
from .world import OFFSETS, Context, Prediction, design_key, separation

TIE = 0.02
DEBUG = False
MIN_DRAWS_PER_DESIGN = 32  # before anything is rejected


@dataclass
class DesignRun:
    design: dict[str, Any]
    predictions: dict[str, Prediction]
    counts: np.ndarray  # [K + 1]
    status: int | None = None  # the endpoint's answer: 200, 400, ...
    error: str | None = None
    evidence: bool = False  # an accept/reject answer only (capabilities, validation): no draws

    @property
    def accepted(self) -> bool:
        return self.status == 200


@dataclass
class Score:
    engine: str
    log_likelihood: float
    impossible_draws: int
    p_value: float
    offset: float
    tied_with: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    verdict: str  # "identified" | "no engine fits" | "inconclusive"
    scores: list[Score]  # best first
    runs: list[DesignRun]
    draws: int
    requests: int
    best: list[str]  # the best engine and the engines tied with it
    reason: str = ""


def _run_terms(
    run: DesignRun, pred: Prediction, j: int
) -> tuple[float, int, tuple[float, int] | None] | None:
    """(log-likelihood, impossible draws, G part) of one engine on one answered run; None when the
    engine's prediction is unknown there (see world.predict)."""
    if pred.rejects != (not run.accepted):  # accepted-vs-rejected mismatch
        if not pred.status_known:
            return 0.0, 0, None
        # A deterministic contradiction: as if every draw (at least 32) were impossible.
        weight = max(int(run.counts.sum()), MIN_DRAWS_PER_DESIGN)
        return weight * math.log(stats.FLOOR), 1, (2 * weight * -math.log(stats.FLOOR), 1)
    if pred.rejects:
        return 0.0, 0, None
    if pred.unknown:
        return None
    probs = list(pred.by_offset[j])
    ll, imp = stats.log_likelihood(run.counts.tolist(), probs)
    return ll, imp, stats.g_statistic(run.counts.tolist(), probs)


def score(
    runs: Sequence[DesignRun], names: Sequence[str], groups: Sequence[int] | None = None
) -> list[Score]:
    """Every engine's log-likelihood, impossible draws and G-test p-value (best first).

    An engine whose prediction for a run is unknown gets the best log-likelihood any engine
    reaches on that run (the benefit of the doubt, never an advantage) and no G-test part.

    ``groups`` (one label per run: the context it was drawn at) makes the fit a test per group:
    an engine must fit every context, so its p-value is the smallest group's, the same test each
    context's sequential run stopped on (at most three contexts: a true engine is rejected with
    probability <= 0.003). Pooled over all runs, one context's misfit drowns among the others'
    degrees of freedom: the near penalty prompt's run stopped on "no engine fits" (llama.cpp at
    p = 0.0006, its penalties acting where the endpoint's did not), and pooled with the anchor's
    and the far prompt's well-fitting designs llama.cpp came back "identified" at p = 0.01.
    """
    answered = [r for r in runs if r.status is not None]
    out = []
    for j, offset in enumerate(OFFSETS[:1]):
        terms = {n: [_run_terms(r, r.predictions[n], j) for r in answered] for n in names}
        best_known = [
            max((terms[n][i][0] for n in names if terms[n][i] is not None), default=0.0)
            for i in range(len(answered))
        ]
        label = [0] * len(runs) if groups is None else list(groups)
        label_of = [label[i] for i, r in enumerate(runs) if r.status is not None]
        for name in names:
            ll, impossible = 0.0, 0
            parts: dict[int, list[tuple[float, int]]] = {}
            for i, t in enumerate(terms[name]):
                if t is None:
                    ll += best_known[i]
                    continue
                ll += t[0]
                impossible += t[1]
                if t[2] is not None:
                    parts.setdefault(label_of[i], []).append(t[2])
            p = min((stats.combined_p(g) for g in parts.values()), default=1.0)
            out.append(Score(name, ll, impossible, p, offset))
    out.sort(key=lambda s: -s.log_likelihood)
    return out


def tied(a: str, b: str, runs: Sequence[DesignRun]) -> bool:
    """Same prediction (within TIE, at some offset) on every design the endpoint answered."""
    return all(separation(r.predictions[a], r.predictions[b]) < TIE for r in runs if r.status is not None)


def decide(scores: list[Score], runs: Sequence[DesignRun]) -> tuple[str, list[str], str]:
    """(verdict, best engine and its ties, reason)."""
    if not scores:
        return "inconclusive", [], "no designs"
    best = scores[0]
    group = [best.engine] + [s.engine for s in scores[1:] if tied(best.engine, s.engine, runs)]
    rivals = [s for s in scores[1:] if s.engine not in group]
    enough = all(r.counts.sum() >= MIN_DRAWS_PER_DESIGN for r in runs if r.accepted and not r.evidence)
    fitting = [s for s in scores if s.p_value >= stats.REJECT_P]
    if enough and not fitting:
        return "no engine fits", [], f"every engine rejected (best p = {best.p_value:.2g})"
    lead = best.log_likelihood - rivals[0].log_likelihood if rivals else math.inf
    if best.p_value >= stats.REJECT_P and lead >= stats.LEAD and enough:
        return "identified", group, f"lead {lead:.1f} nats over {rivals[0].engine if rivals else 'nobody'}"
    return "inconclusive", group, f"lead {lead:.1f} nats, p = {best.p_value:.2g}"


def withhold(verdict: str, reason: str, untested: dict[str, str]) -> tuple[str, str]:
    """An identification stands only for the properties that were tested: when a requested test
    measured nothing, every engine that agrees with the leader on what was tested (one nobody
    emulated included) is tied with it, so "identified" becomes "inconclusive", naming what went
    untested and why. "no engine fits" stands: the tested properties already rule every engine out."""
    if verdict != "identified" or not untested:
        return verdict, reason
    why = "; ".join(f"{name} untested ({because})" for name, because in untested.items())
    return "inconclusive", f"{reason}, but {why}: engines that differ only there are tied with it"


def _useful(run: DesignRun, scores: Sequence[Score]) -> bool:
    """Whether more draws of ``run`` can still tell two plausible engines apart."""
    if run.status is None or not scores or run.counts.sum() < MIN_DRAWS_PER_DESIGN:
        return True
    plausible = [s.engine for s in scores if s.p_value >= stats.REJECT_P] or [scores[0].engine]
    if len(plausible) == 1:  # sharpen the best against its nearest rival
        plausible = [scores[0].engine, *(s.engine for s in scores[1:2])]
    return any(
        separation(run.predictions[a], run.predictions[b]) >= TIE
        for i, a in enumerate(plausible)
        for b in plausible[i + 1 :]
    )


def run_sequential(
    endpoint: Endpoint,
    context: Context,
    chosen: Sequence[tuple[dict[str, Any], dict[str, Prediction]]],
    names: Sequence[str],
    *,
    n_per_request: int,
    use_seed: bool,
    max_draws: int,
    reserve: int,
    evidence: Sequence[DesignRun] = (),
    progress: Callable[[int, int], None] | None = None,
) -> Outcome:
    runs = [DesignRun(dict(d), p, np.zeros(context.k + 1, dtype=np.int64)) for d, p in chosen]
    draws, start_requests, seed = 0, endpoint.requests, 1000
    verdict, best, reason, scores = "inconclusive", [], "no draws", []
    while True:
        active = [r for r in runs if r.status in (None, 200) and _useful(r, scores)]
        if not active:
            reason = reason if scores else "no design left to sample"
            break
        try:
            for run in active:
                if endpoint.left <= reserve or draws >= max_draws:
                    raise BudgetSpent("sampling budget spent")
                n = min(n_per_request, max_draws - draws)
                seed += 1
                reply = endpoint.generate(
                    context.prompt, run.design, n=n, top_logprobs=1, seed=seed if use_seed else None
                )
                run.status = reply.status
                if not reply.ok:
                    run.error = reply.error
                    continue
                for c in reply.choices:
                    run.counts[context.cell(c.token if c.token is not None else c.text)] += 1
                    draws += 1
                if progress is not None:
                    progress(draws, max_draws)
        except BudgetSpent as e:
            reason = str(e)
            break
        scores = score([*runs, *evidence], names)
        verdict, best, reason = decide(scores, [*runs, *evidence])
        if DEBUG:
            print(
                draws,
                verdict,
                reason,
                [(s.engine, round(s.log_likelihood, 1), f"{s.p_value:.2g}") for s in scores[:3]],
            )
        if verdict != "inconclusive":
            break
    if not scores:
        scores = score([*runs, *evidence], names)
        verdict, best, why = decide(scores, [*runs, *evidence])
        reason = reason or why
    for s in scores:
        s.tied_with = [
            o.engine for o in scores if o.engine != s.engine and tied(s.engine, o.engine, [*runs, *evidence])
        ]
    return Outcome(verdict, scores, runs, draws, endpoint.requests - start_requests, best, reason)


def describe_runs(runs: Sequence[DesignRun], context: Context) -> list[dict[str, Any]]:
    out = []
    for r in runs:
        row: dict[str, Any] = {"design": design_key(r.design), "status": r.status}
        if r.accepted:
            labels = [*context.tokens, "(other)"]
            row["counts"] = {labels[i]: int(c) for i, c in enumerate(r.counts) if c}
        if r.error:
            row["error"] = r.error
        out.append(row)
    return out
