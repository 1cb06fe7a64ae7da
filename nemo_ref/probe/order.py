"""Test 4, order and truncation (docs/probe.md, "The likelihood test, in plain words"), with test
5's presence and frequency designs: for each context (the anchor, and penalties.py's near and far
prompts) the designs that split the most pairs of engines (world.choose_designs), drawn and scored
by the sequential likelihood test (likelihood.py) together with the accept/reject evidence of the
other tests; the ranking and the verdict go into the report.
"""

from __future__ import annotations

from . import likelihood, world
from .penalties import penalty_context, penalty_scope
from .session import RESERVE, Session

MAX_DRAWS = 3000  # sampled tokens for the likelihood test


def order(s: Session) -> None:
    """Test 4 (and 5's draws): per context, the designs that split the most pairs of engines, drawn
    and scored together; the ranking, the verdict and, with test 5, the penalties' scope."""
    pen_ctx = penalty_context(s) if "penalties" in s.only else None
    far_ctx = penalty_context(s, far=True) if pen_ctx is not None else None
    # (context, the candidate designs, how many to keep): the anchor's order-and-truncation grid,
    # then the penalty designs near and far.
    plans = [(s.context, world.order_designs() if "order" in s.only else [], 6)]
    plans += [(ctx, world.penalty_designs(), n) for ctx, n in ((pen_ctx, 4), (far_ctx, 3)) if ctx is not None]
    contexts = [ctx for ctx, _, _ in plans]
    chosen_all = []
    separable: dict[tuple[str, str], float] = {}  # engine pair -> the best separation any design offers
    for ctx, candidates, keep in plans:
        if not candidates:
            continue
        chosen, best_possible = world.choose_designs(s.engines, ctx, candidates, keep)
        chosen_all += [(ctx, d, p) for d, p in chosen]
        for pair, v in best_possible.items():
            separable[pair] = max(separable.get(pair, 0.0), v)
    # The likelihood test runs per context (each has its own cells); scores add up.
    outcomes = []
    budget_each = max(0, (s.endpoint.left - RESERVE)) // max(1, len(contexts))
    for ctx in contexts:
        mine = [(d, p) for c, d, p in chosen_all if c is ctx]
        if not mine:
            continue
        reserve = max(RESERVE, s.endpoint.left - budget_each)
        out = likelihood.run_sequential(
            s.endpoint,
            ctx,
            mine,
            s.names,
            n_per_request=s.n,
            use_seed=s.seed_ok,
            max_draws=MAX_DRAWS // len(contexts),
            reserve=reserve,
            evidence=s.evidence_runs,
            progress=(lambda d, m: s.progress("sampling", d, m)) if s.progress else None,
        )
        outcomes.append((ctx, out))
    if not outcomes:
        s.report.not_testable["order"] = "no usable design (every candidate depends on the invisible tail)"
        return
    runs = [r for _, o in outcomes for r in o.runs] + s.evidence_runs
    groups = [i for i, (_, o) in enumerate(outcomes) for _ in o.runs] + [len(outcomes)] * len(s.evidence_runs)
    scores = likelihood.score(runs, s.names, groups)  # the fit is tested per context
    verdict, best, reason = likelihood.decide(scores, runs)
    penalty_outcomes = [(c, o) for c, o in outcomes if c is pen_ctx or c is far_ctx]
    if "penalties" in s.only and not penalty_outcomes:
        why = _penalties_untested(s, pen_ctx)
        s.report.not_testable["penalties"] = why
        verdict, reason = likelihood.withhold(verdict, reason, {"penalty scope": why})
    for sc in scores:
        sc.tied_with = [
            o.engine for o in scores if o.engine != sc.engine and likelihood.tied(sc.engine, o.engine, runs)
        ]
    r = s.report
    r.verdict, r.answer = verdict, best
    r.ranking = [
        {
            "engine": sc.engine,
            "log_likelihood": round(sc.log_likelihood, 3),
            "impossible_draws": sc.impossible_draws,
            "p_value": float(f"{sc.p_value:.3g}"),
            "tied_with": sc.tied_with,
        }
        for sc in scores
    ]
    draws = sum(o.draws for _, o in outcomes)
    order_runs = likelihood.describe_runs(outcomes[0][1].runs, outcomes[0][0])
    inseparable = sorted({tuple(sorted(k)) for k, v in separable.items() if v < likelihood.TIE})
    r.prop(
        "order_truncation",
        verdict if not best else f"{verdict}: {' = '.join(best)}",
        best,
        {
            "designs": order_runs,
            "draws": draws,
            "reason": reason,
            "inseparable_here": [" = ".join(p) for p in inseparable],
        },
    )
    if penalty_outcomes:
        penalty_scope(s, penalty_outcomes, best, far_ctx)


def _penalties_untested(s: Session, pen_ctx: world.Context | None) -> str:
    """Why test 5 measured nothing."""
    if pen_ctx is None:
        return "the anchor prompt with its likeliest tokens in front got no logprobs"
    return (
        "no usable penalty design: with the likeliest tokens penalised, every design's prediction"
        f" depends on the invisible tail (the anchor's top {s.context.k} tokens hold"
        f" {1 - s.context.other:.3f})"
    )


__all__ = ["MAX_DRAWS", "order"]
