"""StopMatcher (nemo_ref/sequence.py) against the plain definitions it replaces per token.

`find_stop` (earliest start among the matches that end in the new text; tie: earlier stop) and
`held_back` (longest suffix that is a proper prefix of a stop) rescan the text; the matcher
follows one KMP automaton per stop. Random texts over a 3-letter alphabet (so that partial
matches, overlaps and restarts are everywhere), random stops, random chunkings: after every chunk
both must agree. Issue 15 item 8: a token's cost no longer grows with the output or the stops'
length (scripts/bench_stop_strings.py).
"""

from __future__ import annotations

import random

from nemo_ref.sequence import StopMatcher, find_stop, held_back


def _random_case(rng: random.Random) -> tuple[str, list[str], list[int]]:
    text = "".join(rng.choice("aab") for _ in range(rng.randrange(1, 60)))
    stops = [
        "".join(rng.choice("ab") for _ in range(rng.randrange(1, 7))) for _ in range(rng.randrange(1, 4))
    ]
    cuts, i = [], 0
    while i < len(text):
        i = min(len(text), i + rng.randrange(1, 5))
        cuts.append(i)
    return text, stops, cuts


def test_matches_the_rescanning_definitions():
    rng = random.Random(0)
    matched = held = 0
    for _ in range(3000):
        text, stops, cuts = _random_case(rng)
        m, before = StopMatcher(stops), 0
        for end in cuts:
            got = m.feed(text[before:end])
            want = find_stop(text[:end], stops, before)
            assert got == want, (text[:end], stops, before)
            if want is not None:
                matched += 1
                break
            assert m.held == held_back(text[:end], stops), (text[:end], stops)
            held += m.held > 0
            before = end
    assert matched > 1000 and held > 1000  # both paths were exercised


def test_tie_goes_to_the_earlier_stop_and_long_overlaps_restart():
    m = StopMatcher(["bc", "abc"])
    assert m.feed("xab") is None and m.held == 2  # "ab" is a prefix of "abc"
    assert m.feed("c") == 1  # "abc" starts at 1, before "bc" at 2
    m = StopMatcher(["aab"])
    assert m.feed("aaaa") is None and m.held == 2
    assert m.feed("ab") == 3
