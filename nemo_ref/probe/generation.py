"""The tests that generate a few tokens (docs/probe.md): 6 seed and 7 stop strings. They run last,
on the requests kept in reserve for them (session.RESERVE).
"""

from __future__ import annotations

import threading
from typing import Any

from .session import Session


def seed(s: Session) -> None:
    """Test 6: the same seed twice, another seed, and the seeded request among 7 concurrent ones."""
    if not s.seed_ok:
        return
    prompt, fields = s.context.prompt, {"temperature": 1.0}
    a = s.endpoint.generate(prompt, fields, max_tokens=8, seed=7)
    b = s.endpoint.generate(prompt, fields, max_tokens=8, seed=7)
    c = s.endpoint.generate(prompt, fields, max_tokens=8, seed=8)
    if not (a.ok and b.ok and c.ok):
        s.report.not_testable["seed"] = "seeded requests failed"
        return
    text = lambda rep: rep.choices[0].text  # noqa: E731
    results: dict[int, Any] = {}

    def one(i: int) -> None:
        results[i] = s.endpoint.generate(prompt, fields, max_tokens=8, seed=7 if i == 0 else None)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batched = results.get(0)
    observed = {
        "same seed, same text": text(a) == text(b),
        "different seed, different text": text(a) != text(c),
        "batch-invariant (seeded among 7 concurrent requests)": bool(
            batched and batched.ok and text(batched) == text(a)
        ),
    }
    # Engines whose seed makes a request repeatable (per-request generators, counter RNGs)
    # versus those that ignore it or share one global generator.
    unseeded = ("ignored", "global", "best effort")
    repeatable = [e.name for e in s.engines if not e.spec.seeding.value.startswith(unseeded)]
    same = observed["same seed, same text"]
    matches = repeatable if same else [e.name for e in s.engines if e.name not in repeatable]
    s.report.prop(
        "seed",
        observed,
        matches,
        {"texts": [text(a), text(b), text(c), text(batched) if batched and batched.ok else None]},
    )


def stop(s: Session) -> None:
    """Test 7: two stop strings from a greedy continuation, listed in both orders: does the
    earliest match win, and is the stop text returned?"""
    prompt = s.context.prompt
    base = s.endpoint.generate(prompt, {"temperature": 0.0}, max_tokens=12)
    if not base.ok or len(base.choices[0].text) < 6:
        s.report.not_testable["stop"] = "no greedy continuation long enough to place two stop strings"
        return
    text = base.choices[0].text
    early, late = _two_stops(text)
    if early is None:
        s.report.not_testable["stop"] = f"no two distinct substrings in the greedy text {text!r}"
        return
    outs = []
    for order in ([late, early], [early, late]):
        rep = s.endpoint.generate(prompt, {"temperature": 0.0}, max_tokens=12, stop=order)
        outs.append(rep.choices[0].text if rep.ok else None)
    cut_early = text[: text.index(early)]
    observed = {
        "earliest match wins": all(
            o is not None and o.startswith(cut_early) and len(o) <= text.index(early) + len(early)
            for o in outs
        ),
        "stop text included": any(o is not None and o.endswith(early) for o in outs),
    }
    s.report.prop("stop", observed, [], {"greedy": text, "stops": [early, late], "outputs": outs})


def _two_stops(text: str) -> tuple[str | None, str | None]:
    """Two 2-character substrings whose first occurrences differ and do not overlap."""
    for i in range(1, len(text) - 1):
        a = text[i : i + 2]
        if text.index(a) != i or not a.strip():
            continue
        for j in range(i + 2, len(text) - 1):
            b = text[j : j + 2]
            if text.index(b) == j and b.strip() and a not in b:
                return a, b
    return None, None


__all__ = ["seed", "stop"]
