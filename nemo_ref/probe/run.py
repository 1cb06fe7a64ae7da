"""The probe's run: find the anchor, then the tests in order, and the report they build
(docs/probe.md).

1 capabilities, 2 logprobs mode, 3 greedy, 8 validation (checks.py: cheap and deterministic, they go
first, and their accept/reject answers count as evidence for the ranking), then 4 order and
truncation with step-0 penalties (5) in one sequential likelihood test (order.py, penalties.py),
then 6 seed and 7 stop strings (generation.py) from the budget kept in reserve for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..sampling.engines import registry
from . import checks, generation, order
from .anchor import find_anchor
from .client import BudgetSpent, Endpoint
from .report import Report
from .session import Session
from .suite import TESTS

# The tests as run, in order: "order" also runs "penalties" (test 5 draws with test 4).
STEPS: tuple[tuple[str, Callable[[Session], None]], ...] = (
    ("capabilities", checks.capabilities),
    ("logprobs_mode", checks.logprobs_mode),
    ("greedy", checks.greedy),
    ("validation", checks.validation),
    ("order", order.order),
    ("seed", generation.seed),
    ("stop", generation.stop),
)


def run(
    endpoint: Endpoint,
    only: tuple[str, ...] = TESTS,
    engines: list[Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Report:
    """Probe `endpoint` with the tests in `only` against `engines` (default: every emulation)."""
    engines = engines or [registry.get(n) for n in registry.names()]
    r = Report(endpoint.base_url, endpoint.model)
    try:
        anchor = find_anchor(endpoint)
    except BudgetSpent:
        r.not_testable["everything"] = "the budget ran out while looking for an anchor"
        return _finish(r, endpoint)
    r.requests_by_test["anchor"] = endpoint.requests
    if anchor.context is None:
        r.notes.append(f"no anchor: {anchor.note}")
        r.not_testable["order"] = "no logprobs: the draws cannot be compared with predictions"
        return _finish(r, endpoint)
    if anchor.note:
        r.notes.append(anchor.note)
    if anchor.k < 20:
        r.notes.append(f"top_logprobs capped at {anchor.k}: fewer known tokens, less power")
    r.prop(
        "anchor",
        {"prompt": anchor.context.prompt, "route": endpoint.route, "top_logprobs": anchor.k},
        [],
        {
            "top": [
                [t, round(math.exp(lp), 4)]
                for t, lp in zip(anchor.context.tokens[:6], anchor.context.logprobs, strict=False)
            ],
            "spread_of_repeats": round(anchor.context.spread, 6),
            "prompts_tried": anchor.tried,
            "qualified": anchor.qualified,
        },
    )
    session = Session(endpoint, list(engines), r, anchor.context, anchor.k, only, progress)
    for name, test in STEPS:
        if name in only or (name == "order" and "penalties" in only):
            _counted(session, name, test)
    return _finish(r, endpoint)


def _counted(session: Session, name: str, test: Callable[[Session], None]) -> None:
    """Run one test; its requests are counted, and a spent budget makes it "not testable"."""
    before = session.endpoint.requests
    try:
        test(session)
    except BudgetSpent:
        session.report.not_testable[name] = "the request budget ran out"
    finally:
        session.report.requests_by_test[name] = session.endpoint.requests - before


def _finish(r: Report, endpoint: Endpoint) -> Report:
    r.requests = endpoint.requests
    return r


__all__ = ["STEPS", "run"]
