"""``nemo-ref probe``: find out, from requests alone, what an OpenAI-compatible endpoint does with
each sampling field, and which known engine it behaves like (docs/probe.md).

A client over HTTP only (client.py, httpx); it imports nothing of the server. The method: an anchor
prompt with an informative next-token distribution (anchor.py), the engines' emulations asked what
they would do with it (world.py), draws from the endpoint scored against every emulation by a
sequential likelihood test (likelihood.py, stats.py). The tests (suite.py names them) share one
session (session.py): the cheap deterministic checks (checks.py), order and truncation
(order.py) with penalty scope (penalties.py), seed and stop strings (generation.py); run.py runs
them in order into the report (report.py). ``probe(base_url, model, ...)`` runs it all and returns
the JSON report.
"""

from __future__ import annotations

from typing import Any

from .suite import TESTS


def probe(
    base_url: str,
    model: str,
    *,
    budget: int = 300,
    api_key: str | None = None,
    extra_body: dict[str, Any] | None = None,
    only: tuple[str, ...] = TESTS,
    engines: list[Any] | None = None,
    force_chat: bool = False,
    progress: Any = None,
    transport: Any = None,
) -> dict[str, Any]:
    """Probe the endpoint; returns the report as JSON-ready data (see docs/probe.md)."""
    from .client import Endpoint  # httpx: imported when a probe runs, not by `nemo-ref --help`
    from .report import RANDOM_WEIGHTS_NOTE, as_json
    from .run import run

    ep = Endpoint(
        base_url,
        model,
        api_key=api_key,
        extra_body=dict(extra_body or {}),
        budget=budget,
        force_chat=force_chat,
        transport=transport,
    )
    if progress is not None:
        ep.on_request = lambda e: progress("requests", e.requests, e.budget)
    try:
        report = run(ep, only=tuple(only), engines=list(engines or []), progress=progress)
        data = as_json(report, ep)
        if ep.random_weights:
            data["notes"].append(RANDOM_WEIGHTS_NOTE)
        return data
    finally:
        ep.close()


__all__ = ["TESTS", "probe"]
