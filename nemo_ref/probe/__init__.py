"""``nemo-ref probe``: find out, from requests alone, what an OpenAI-compatible endpoint does with
each sampling field, and which known engine it behaves like (docs/probe.md).

A client over HTTP only (httpx); it imports nothing of the server. The method: an anchor prompt
with an informative next-token distribution (anchor.py), the engines' emulations asked what they
would do with it (world.py), draws from the endpoint scored against every emulation by a
sequential likelihood test (likelihood.py, stats.py), and the cheap deterministic checks around it
(run.py). ``probe(base_url, model, ...)`` runs it all and returns the JSON report.
"""

from __future__ import annotations

from typing import Any

# The tests, in the order they run (--only takes a subset). "order" is test 4, "penalties" test 5.
TESTS = ("capabilities", "logprobs_mode", "greedy", "validation", "order", "penalties", "seed", "stop")


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
    from .run import Probe

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
        p = Probe(ep, only=tuple(only), engines=list(engines or []), progress=progress)
        report = p.run()
        data = as_json(report, ep)
        if ep.random_weights:
            data["notes"].append(RANDOM_WEIGHTS_NOTE)
        return data
    finally:
        ep.close()


__all__ = ["TESTS", "probe"]
