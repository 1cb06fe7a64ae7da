"""scripts/gpu_bench.py --dry-run: the whole GPU check-and-bench script at tiny sizes, under Triton's
interpreter on CPU, writing its report to a temporary directory (never to benchmarks/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_dry_run(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_bench.py"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    report = json.loads((tmp_path / "dry-run-cpu.json").read_text())
    assert report["dry_run"] is True
    assert report["checks"] and all(c["ok"] for c in report["checks"]), report["checks"]
    names = " ".join(c["name"] for c in report["checks"])
    for kind in ("prefill bfloat16", "decode float16", "sampler probabilities", "triton vs sdpa"):
        assert kind in names
    for section in ("prefill", "decode", "sampler", "e2e"):
        assert report[section], section
        assert all(r.get("triton_ms", r.get("tok_s", 0)) > 0 for r in report[section])
    assert {r["backend"] for r in report["e2e"]} == {"triton", "sdpa"}
    # Issue 12's methodology: two contexts, the capturable step beside the plain one, a split sweep.
    assert {r["context"] for r in report["e2e"]} == {5, 40}
    assert {r["step"] for r in report["e2e"]} == {"plain", "capturable, uncaptured"}
    assert len(report["decode_splits"]) >= 2 and sum(r["default"] for r in report["decode_splits"]) == 1
    md = (tmp_path / "dry-run-cpu.md").read_text()
    assert "Dry run" in md and "| seq_len |" in md
