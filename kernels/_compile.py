"""Compile every kernel for an H100 (sm_90) on a machine without a GPU; report registers and spills.

``triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32))`` runs
the real compiler pipeline down to a cubin with the ptxas bundled in the triton wheel; ``ptxas
-v`` on the PTX then reports registers, spill stores/loads and the stack frame. Run::

    python -m nemo_ref.kernels._compile          # a table; exit status 1 if a no-spill kernel spills

It must run with ``TRITON_INTERPRET`` unset (the interpreter replaces ``@triton.jit`` functions).
Each kernel is compiled at its launcher's default configuration, with the divisibility-by-16
hints a real launch gets for tensor pointers and strides.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import attention, sampling


@dataclass(frozen=True)
class KernelSpec:
    """One kernel at one configuration: everything ``triton.compile`` needs but the target."""

    label: str
    fn: Any  # a triton JITFunction
    pointers: dict[str, str]  # argument -> pointer type, e.g. "*bf16"
    constexprs: dict[str, Any]
    floats: tuple[str, ...] = ()  # float32 scalar arguments; every other scalar is i32
    num_warps: int = 4
    num_stages: int = 3
    no_spill: bool = True  # fail if it spills
    notes: dict[str, Any] = field(default_factory=dict)

    def signature(self) -> dict[str, str]:
        sig = {}
        for name in self.fn.arg_names:
            if name in self.constexprs:
                sig[name] = "constexpr"
            elif name in self.pointers:
                sig[name] = self.pointers[name]
            else:
                sig[name] = "fp32" if name in self.floats else "i32"
        return sig

    def attrs(self) -> dict[tuple[int, ...], list]:
        """What a launch with torch tensors gets: 16-byte aligned pointers and strides % 16 == 0."""
        hint = [["tt.divisibility", 16]]
        return {
            (i,): hint
            for i, name in enumerate(self.fn.arg_names)
            if name in self.pointers or name.startswith("stride_")
        }


@dataclass(frozen=True)
class CompileStats:
    label: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    shared_bytes: int
    wgmma: bool
    seconds: float
    no_spill: bool

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


def _tool(name: str) -> str:
    import triton.backends.nvidia as nvidia

    return os.path.join(os.path.dirname(nvidia.__file__), "bin", name)


def compile_spec(spec: KernelSpec, arch: int = 90) -> CompileStats:
    t0 = time.perf_counter()
    src = ASTSource(spec.fn, spec.signature(), spec.constexprs, spec.attrs())
    options = {"num_warps": spec.num_warps, "num_stages": spec.num_stages}
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        suffix = "a" if arch == 90 else ""
        out = subprocess.run(
            [_tool("ptxas"), f"-arch=sm_{arch}{suffix}", "-v", ptx, "-o", os.path.join(tmp, "k.o")],
            capture_output=True,
            text=True,
            check=True,
        )
    log = out.stdout + out.stderr

    def number(pattern: str) -> int:
        m = re.search(pattern, log)
        if not m:
            raise RuntimeError(f"ptxas -v output has no {pattern!r}:\n{log}")
        return int(m.group(1))

    return CompileStats(
        label=spec.label,
        registers=number(r"Used (\d+) registers"),
        spill_stores=number(r"(\d+) bytes spill stores"),
        spill_loads=number(r"(\d+) bytes spill loads"),
        stack_bytes=number(r"(\d+) bytes stack frame"),
        shared_bytes=int(kernel.metadata.shared),
        wgmma="wgmma" in kernel.asm["ptx"],
        seconds=seconds,
        no_spill=spec.no_spill,
    )


def default_specs() -> list[KernelSpec]:
    """Every kernel at its launcher's defaults (Nemo's head_dim 128 and GQA ratio 4, plus 1 and 8)."""
    specs = []
    for dtype, ty in (("bf16", "*bf16"), ("fp16", "*fp16"), ("fp32", "*fp32")):
        block_m, block_n, warps, stages = attention.prefill_config(dtype == "fp32")
        specs.append(
            KernelSpec(
                f"prefill {dtype} D128 G4 {block_m}x{block_n}",
                attention._prefill_kernel,
                {"Q": ty, "K": ty, "V": ty, "O": ty, "start_pos": "*i64"},
                {
                    "GROUP": 4,
                    "HEAD_DIM": 128,
                    "BLOCK_M": block_m,
                    "BLOCK_N": block_n,
                    "PRECISION": attention.precision(dtype == "fp32"),
                },
                floats=("qk_scale",),
                num_warps=warps,
                num_stages=stages,
                no_spill=False,  # compute-bound: report, do not fail
            )
        )
    for group, dtype in ((1, "bf16"), (4, "bf16"), (8, "bf16"), (4, "fp32")):
        ty = "*" + dtype
        specs.append(
            KernelSpec(
                f"decode split {dtype} D128 G{group} N{attention.DECODE_BLOCK_N}",
                attention._decode_split_kernel,
                {
                    "Q": ty,
                    "K": ty,
                    "V": ty,
                    "O_part": "*fp32",
                    "LSE_part": "*fp32",
                    "start_pos": "*i64",
                },
                {
                    "GROUP": group,
                    "GROUP_PAD": max(16, triton.next_power_of_2(group)),
                    "HEAD_DIM": 128,
                    "BLOCK_N": attention.DECODE_BLOCK_N,
                    "PRECISION": attention.precision(dtype == "fp32"),
                },
                floats=("qk_scale",),
                num_warps=attention.DECODE_NUM_WARPS,
                num_stages=attention.DECODE_NUM_STAGES,
            )
        )
    specs.append(
        KernelSpec(
            "decode combine D128",
            attention._decode_combine_kernel,
            {"O_part": "*fp32", "LSE_part": "*fp32", "O": "*bf16"},
            {"HEAD_DIM": 128, "BLOCK_S": 16},
            num_warps=1,
            num_stages=1,
        )
    )
    sample_ptrs = {
        "logits": "*fp32", "bias": "*fp32", "prompt_mask": "*u8", "counts": "*i32",
        "allowed": "*u8", "temperature": "*fp32", "top_p": "*fp64", "top_k": "*i32",
        "min_p_floor": "*fp32", "u": "*fp64", "rep_penalty": "*fp32", "pres_penalty": "*fp32",
        "freq_penalty": "*fp32", "z_buf": "*fp32", "probs": "*fp32", "tokens": "*i64",
    }  # fmt: skip
    for flags, probs in ((True, False), (False, False), (True, True)):
        specs.append(
            KernelSpec(
                f"sample V{sampling.DEFAULT_BLOCK_V}"
                + (" all inputs" if flags else " logits only")
                + (" +probs" if probs else ""),
                sampling._sample_kernel,
                sample_ptrs,
                {
                    "HAS_BIAS": flags,
                    "HAS_PENALTIES": flags,
                    "HAS_ALLOWED": flags,
                    "WRITE_PROBS": probs,
                    "BLOCK_V": sampling.DEFAULT_BLOCK_V,
                },
                num_warps=sampling.DEFAULT_NUM_WARPS,
                num_stages=1,
            )
        )
    specs.append(
        KernelSpec(
            f"raw_logprobs V{sampling.DEFAULT_BLOCK_V}",
            sampling._raw_logprobs_kernel,
            {
                "logits": "*fp32",
                "allowed": "*u8",
                "logprobs": "*fp32",
                "top_ids": "*i64",
                "top_values": "*fp32",
            },
            {"HAS_ALLOWED": True, "BLOCK_V": sampling.DEFAULT_BLOCK_V},
            num_warps=sampling.DEFAULT_NUM_WARPS,
            num_stages=1,
        )
    )
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--json", action="store_true", help="one JSON object per kernel")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter cannot compile")
    failed = []
    if not args.json:
        print(f"{'kernel':44} {'regs':>5} {'spill st/ld':>12} {'stack':>6} {'smem':>7} wgmma  secs")
    for spec in default_specs():
        s = compile_spec(spec, args.arch)
        if args.json:
            print(json.dumps({**s.__dict__, "spills": s.spills}), flush=True)
        else:
            print(
                f"{s.label:44} {s.registers:5d} {s.spill_stores:5d}/{s.spill_loads:<6d} "
                f"{s.stack_bytes:6d} {s.shared_bytes:7d} {'yes' if s.wgmma else 'no':5} {s.seconds:5.1f}"
            )
        if s.spills and s.no_spill:
            failed.append(s.label)
    if failed:
        print(f"SPILLS in kernels that must not spill: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
