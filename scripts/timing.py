"""Interleaved wall-clock timings for the benchmark scripts (scripts/ is on sys.path when one runs)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def summary(times: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(times), "min_ms": min(times), "repeat": len(times)}


def timed(fns: dict[str, Callable[[], object]], repeat: int, warmup: int) -> dict[str, dict]:
    """Interleaved timings (ms): each repetition runs every function once, in turn, so that all of
    them see the same load on a shared machine."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: summary(t) for name, t in times.items()}
