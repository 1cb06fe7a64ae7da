"""Per-token cost of stop-string handling (nemo_ref/sequence.py) as the output grows (issue 15, item 8).

    python scripts/bench_stop_strings.py [--out FILE.json]   # printed when --out is not given

The recorded runs: benchmarks/server-hardening-item8-stop-before.json (the rescan per token) and
-stop-after.json (the KMP automata), summed up in benchmarks/server-hardening.md.

One ``Sequence`` appends the same 2-character token ("ab") until its text is 1k, 20k and 100k
characters long, with 4 stop strings that never match but whose hold-back check has to look far:
'x' + 'abab...' against an 'abab...' output (every suffix of the text is a prefix of every stop
after its first character). The time of ``append`` + ``take_delta`` (what the engine does per token)
is the median of the last 200 steps before each length; the ratios to 1k are from the same run.
A second table varies the stop strings' length at 20k characters (the server accepts up to
``MAX_STOP_CHARS``): the hold-back check's cost in the stop length. No model is involved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from machine_info import cpu_model  # scripts/ is on sys.path when a script runs

LENGTHS = (1_000, 20_000, 100_000)
STOP_LENGTHS = (16, 64, 256)
TAIL = 200  # steps timed before each length


def per_step_ms(tok, token: int, stop_len: int, lengths: tuple[int, ...]) -> dict[int, float]:
    from nemo_ref.sampling.params import SamplingParams
    from nemo_ref.sequence import Sequence

    piece = len(tok.decode([token]))
    stops = tuple(c + "ab" * ((stop_len - 1) // 2) for c in "xyzw")
    params = SamplingParams(stop=stops, max_tokens=10**6)
    seq = Sequence(index=0, prompt=[1], params=params, seed=0, max_new_tokens=10**6, tokenizer=tok)
    out: dict[int, float] = {}
    times: list[float] = []
    for n in lengths:
        while len(seq.text) < n - TAIL * piece:
            seq.append(token, 0.0, [])
            seq.take_delta()
        times.clear()
        while len(seq.text) < n:
            t0 = time.perf_counter()
            seq.append(token, 0.0, [])
            seq.take_delta()
            times.append(time.perf_counter() - t0)
        out[n] = 1000 * statistics.median(times)
    assert not seq.done
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", default="after")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from nemo_ref.server.limits import MAX_STOP_CHARS
    from nemo_ref.tokenizer import load_tokenizer

    tok = load_tokenizer()
    token = tok.encode("ab", bos=False)[0]
    by_length = per_step_ms(tok, token, MAX_STOP_CHARS, LENGTHS)
    by_stop = {n: per_step_ms(tok, token, n, (20_000,))[20_000] for n in STOP_LENGTHS}
    report = {
        "label": args.label,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpu": cpu_model(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "stop_chars": MAX_STOP_CHARS,
        "ms_per_step_by_output_chars": {str(k): round(v, 4) for k, v in by_length.items()},
        "ratio_to_1k": {str(k): round(v / by_length[LENGTHS[0]], 2) for k, v in by_length.items()},
        "ms_per_step_at_20k_by_stop_chars": {str(k): round(v, 4) for k, v in by_stop.items()},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
