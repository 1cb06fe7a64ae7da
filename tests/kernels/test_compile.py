"""Every kernel compiles for an H100 (sm_90) on this CPU-only machine, specialised as a real launch
specialises it; decode and sampling must not spill; the decode heuristic's occupancy is the real one.

The compile runs in a subprocess: it needs ``TRITON_INTERPRET`` unset (other test modules of this
process set it), and a fresh Triton cache in a temporary directory, as on a clean CI machine. One
test function, so pytest-xdist never compiles everything twice (a fixture runs once per worker).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")
from nemo_ref.kernels import interpreted

A = interpreted("attention")  # only constants are used here
S = interpreted("sampling")

MUST_NOT_SPILL = ("decode", "sample", "raw_logprobs")  # memory-bound: a spill is real traffic


def test_every_kernel_compiles_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton_cache")
    out = subprocess.run(
        [sys.executable, "-m", "nemo_ref.kernels._compile", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    errors = [r for r in rows if "error" in r]
    assert not errors, f"kernels that do not compile as launched: {errors}"
    print(f"\n{'kernel':44} {'regs':>5} {'spill st/ld':>12} {'smem':>7} wgmma")
    for r in rows:
        print(
            f"{r['label']:44} {r['registers']:5d} {r['spill_stores']:5d}/{r['spill_loads']:<6d} "
            f"{r['shared_bytes']:7d} {r['wgmma']}"
        )
    assert rows, f"no kernel compiled:\n{out.stdout}\n{out.stderr}"
    stats = {r["label"]: r for r in rows}
    names = " ".join(stats)
    for kernel in ("prefill bf16", "prefill fp32", "prefill bf16 D256", "decode split",
                   "decode combine", "sample", "top_n=1"):  # fmt: skip
        assert kernel in names, f"{kernel} was not compiled"
    for label, r in stats.items():
        assert 0 < r["registers"] <= 255, label
        if label.startswith(MUST_NOT_SPILL):
            assert not r["spills"], f"{label} spills {r['spill_stores']} B / {r['spill_loads']} B"
        if label.startswith("prefill bf16"):  # Hopper warp-group MMA
            assert r["wgmma"], f"{label} does not use wgmma"
        assert r["shared_bytes"] <= A.SM90_MAX_SHARED, label
    # A top_logprobs=1 launch specialises top_n == 1; the kernel must not (it calls .to on it).
    assert "top_n" not in stats[f"raw_logprobs V{S.DEFAULT_BLOCK_V} top_n=1"]["constexpr_ints"]
    # The split heuristic's programs per SM is what the compiled decode kernel fits.
    assert stats["decode split bf16 D128 G4 N64"]["programs_per_sm"] == A.DECODE_PROGRAMS_PER_SM
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
