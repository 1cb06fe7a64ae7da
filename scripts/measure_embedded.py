"""Measure the embedded model's next-token shape (nemo_ref/demo.py) and print a markdown table.

    python scripts/measure_embedded.py [--presets nemo-tiny nemo-small] [--prompts 100]

The figures go into docs/architecture.md ("The embedded model"); tests/probe/test_embedded.py
holds the same measurement to bounds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from machine_info import cpu_model

    from nemo_ref.demo import embedded_model, next_token_shape

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["nemo-tiny", "nemo-small"])
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args()
    rows = {}
    for preset in args.presets:
        rows[preset] = next_token_shape(embedded_model(preset, seed=0), n_prompts=args.prompts, seed=0)
    if args.json:
        print(json.dumps({"machine": cpu_model(), "results": rows}, indent=2))
        return
    print(f"{args.prompts} random prompts (BOS + 16 random ordinary token ids), weights seed 0\n")
    print(
        "| preset | top-1 p, median (p10-p90) | entropy nats, median (p10-p90) | tokens >= 0.02 | top-5 mass | top-20 mass | distinct top tokens |"
    )
    print("|---|---|---|---|---|---|---|")
    for preset, s in rows.items():
        print(
            f"| {preset} | {s['top1_median']:.2f} ({s['top1_p10']:.2f}-{s['top1_p90']:.2f}) "
            f"| {s['entropy_median']:.2f} ({s['entropy_p10']:.2f}-{s['entropy_p90']:.2f}) "
            f"| {s['plausible_median']:g} | {s['top5_mass_median']:.2f} | {s['top20_mass_median']:.2f} "
            f"| {s['distinct_top_tokens']} / {s['prompts']} |"
        )


if __name__ == "__main__":
    main()
