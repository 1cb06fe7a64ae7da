"""The probe's tests, in the order they run (docs/probe.md, "The tests"): names only, so that the
command line can offer them without importing httpx.

"order" is test 4 (order and truncation), "penalties" test 5 (penalty scope); both draw in one
sequential likelihood test (order.py). --only takes a subset.
"""

from __future__ import annotations

TESTS = ("capabilities", "logprobs_mode", "greedy", "validation", "order", "penalties", "seed", "stop")

__all__ = ["TESTS"]
