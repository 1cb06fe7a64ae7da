"""Compile every kernel for an H100 (sm_90) on a machine without a GPU, as a launch would; report.

Each kernel is compiled from the very launch its launcher builds (``attention.decode_launch``,
``sampling.sampler_launch``, ...) on ``meta`` tensors of real sizes, through Triton's own launch
binder: so exactly the specialisation a real launch gets (an int argument equal to 1 becomes a
constexpr, ints and pointers divisible by 16 get a divisibility hint), then
``triton.compile(..., target=GPUTarget("cuda", 90, 32))`` with the ptxas bundled in the triton
wheel, then ``ptxas -v`` on the PTX for registers, spills and the stack frame. Run::

    python -m nemo_ref.kernels._compile          # a table; exit status 1 if a no-spill kernel spills

It must run with ``TRITON_INTERPRET`` unset (the interpreter replaces ``@triton.jit`` functions).
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
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from . import attention, sampling
from .launch import Launch

SM90_REGISTERS = 65536  # 32-bit registers per SM
SM90_SHARED_PER_SM = 233_472  # bytes per SM; each resident block also reserves 1 KiB
SM90_MAX_BLOCKS, SM90_MAX_WARPS = 32, 64


@dataclass(frozen=True)
class KernelSpec:
    """One kernel at one launch: a label and the launcher call that builds the launch."""

    label: str
    launch: Callable[[], Launch]
    no_spill: bool = True  # fail if it spills


@dataclass(frozen=True)
class CompileStats:
    label: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    shared_bytes: int
    num_warps: int
    wgmma: bool
    constexpr_ints: dict  # arguments the launch specialised into constexprs (== 1)
    seconds: float
    no_spill: bool

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0

    @property
    def programs_per_sm(self) -> int:
        """Resident blocks per SM on sm_90, from registers, shared memory, warps and blocks."""
        regs_per_warp = -(-self.registers * 32 // 256) * 256  # allocated in units of 256
        by_regs = SM90_REGISTERS // (regs_per_warp * self.num_warps)
        by_smem = SM90_SHARED_PER_SM // (self.shared_bytes + 1024)
        return min(by_regs, by_smem, SM90_MAX_BLOCKS, SM90_MAX_WARPS // self.num_warps)


def _tool(name: str) -> str:
    import triton.backends.nvidia as nvidia

    return os.path.join(os.path.dirname(nvidia.__file__), "bin", name)


def as_launched(launch: Launch, target: GPUTarget) -> tuple[ASTSource, dict]:
    """The source and options Triton's launcher would compile for ``launch`` on ``target``.

    Triton's own binder (``create_function_from_signature``, what ``JITFunction.run`` calls)
    specialises the arguments; ``_pack_args`` turns that into signature, constexprs and attrs.
    """
    fn = launch.fn
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, launch.kwargs, bound_args, specialization, options
    )
    return ASTSource(fn, signature, constexprs, attrs), options.__dict__


def compile_spec(spec: KernelSpec, arch: int = 90) -> CompileStats:
    t0 = time.perf_counter()
    target = GPUTarget("cuda", arch, 32)
    src, options = as_launched(spec.launch(), target)
    kernel = triton.compile(src, target=target, options=options)
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

    names = spec.launch().fn.arg_names
    ints = {
        names[k[0]]: v for k, v in src.constants.items() if len(k) == 1 and v == 1 and not isinstance(v, bool)
    }
    return CompileStats(
        label=spec.label,
        registers=number(r"Used (\d+) registers"),
        spill_stores=number(r"(\d+) bytes spill stores"),
        spill_loads=number(r"(\d+) bytes spill loads"),
        stack_bytes=number(r"(\d+) bytes stack frame"),
        shared_bytes=int(kernel.metadata.shared),
        num_warps=int(options["num_warps"]),
        wgmma="wgmma" in kernel.asm["ptx"],
        constexpr_ints=ints,
        seconds=seconds,
        no_spill=spec.no_spill,
    )


META = torch.device("meta")


def _cache(N: int, Hkv: int, S: int, D: int, dtype) -> torch.Tensor:
    return torch.empty((N, Hkv, S, D), device=META, dtype=dtype)


def _attention_launch(kind: str, dtype, group: int, D: int = 128, B: int = 1, **kw) -> Callable[[], Launch]:
    """A launch of Nemo's geometry (8 KV heads) on a 4-row, 8192-position cache: batch ``B``."""

    def build() -> Launch:
        Hkv = 8
        T = 512 if kind == "prefill" else 1
        q = torch.empty((B, Hkv * group, T, D), device=META, dtype=dtype)
        k, v = _cache(4, Hkv, 8192, D, dtype), _cache(4, Hkv, 8192, D, dtype)
        start = torch.empty(B, device=META, dtype=torch.int64)
        rows = torch.empty(B, device=META, dtype=torch.int64)
        if kind == "prefill":
            return attention.prefill_launch(q, k, v, start, rows=rows, **kw)[1][0]
        # A GPU's split count: batch-1 Nemo on a 132-SM H100.
        launches = attention.decode_launch(q, k, v, start, rows=rows, max_splits=50, **kw)[1]
        return launches[0 if kind == "decode" else 1]

    return build


def _sampler_launch(B: int, flags: bool, probs: bool) -> Callable[[], Launch]:
    def build() -> Launch:
        V = 131072
        logits = torch.empty((B, V), device=META)
        per_token = {}
        if flags:
            per_token = dict(
                logit_bias=torch.empty((B, V), device=META),
                prompt_mask=torch.empty((B, V), device=META, dtype=torch.uint8),
                output_counts=torch.empty((B, V), device=META, dtype=torch.int32),
                allowed=torch.empty((B, V), device=META, dtype=torch.bool),
                repetition_penalty=1.1, presence_penalty=0.1, frequency_penalty=0.1,
            )  # fmt: skip
        u = torch.empty(B, device=META, dtype=torch.float64)
        kw = dict(temperature=0.7, top_p=0.9, top_k=50, min_p=0.0)
        return sampling.sampler_launch(logits, u, probs, **kw, **per_token)[-1]

    return build


def _raw_logprobs_launch(B: int, top_n: int) -> Callable[[], Launch]:
    def build() -> Launch:
        logits = torch.empty((B, 131072), device=META)
        allowed = torch.empty((B, 131072), device=META, dtype=torch.uint8)
        return sampling.raw_logprobs_launch(logits, allowed, top_n)[3]

    return build


def default_specs() -> list[KernelSpec]:
    """Every kernel as its launcher launches it by default (Nemo's head_dim 128, GQA 4; also 1,
    8 and head_dim 256), at batch 1 (where the batch strides and counts are 1) and beyond."""
    bf16, fp32 = torch.bfloat16, torch.float32
    specs = []
    for name, dtype in (("bf16", bf16), ("fp32", fp32)):  # fp16 compiles as bf16 does
        bm, bn, _, _ = attention.prefill_config(dtype == fp32)
        specs.append(
            KernelSpec(f"prefill {name} D128 G4 {bm}x{bn}", _attention_launch("prefill", dtype, 4), False)
        )
    bm, bn, _, _ = attention.prefill_config(False, 256)
    specs.append(
        KernelSpec(f"prefill bf16 D256 G2 {bm}x{bn}", _attention_launch("prefill", bf16, 2, D=256), False)
    )
    for group, name, dtype in ((4, "bf16", bf16), (8, "bf16", bf16), (4, "fp32", fp32)):
        bn = attention.decode_config(dtype == fp32)[0]
        specs.append(
            KernelSpec(f"decode split {name} D128 G{group} N{bn}", _attention_launch("decode", dtype, group))
        )
    specs.append(KernelSpec("decode split bf16 D256 G2 B4", _attention_launch("decode", bf16, 2, D=256, B=4)))
    specs.append(KernelSpec("decode combine D128", _attention_launch("combine", bf16, 4)))
    for flags, probs, B in ((True, False, 1), (False, True, 8)):
        label = f"sample V{sampling.DEFAULT_BLOCK_V} B{B}" + (" all inputs" if flags else " logits only")
        specs.append(KernelSpec(label + (" +probs" if probs else ""), _sampler_launch(B, flags, probs)))
    for top_n in (1,):  # top_logprobs=1 is a launch with an int equal to 1 (the hard case)
        specs.append(
            KernelSpec(
                f"raw_logprobs V{sampling.DEFAULT_BLOCK_V} top_n={top_n}", _raw_logprobs_launch(2, top_n)
            )
        )
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--json", action="store_true", help="one JSON object per kernel")
    parser.add_argument("--only", default="", help="compile only kernels whose label contains this")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter cannot compile")
    failed = []
    if not args.json:
        print(f"{'kernel':44} {'regs':>5} {'spill st/ld':>12} {'stack':>6} {'smem':>7} /SM wgmma  secs")
    only = args.only
    for spec in default_specs():
        if only and only not in spec.label:
            continue
        try:
            s = compile_spec(spec, args.arch)
        except Exception as e:  # a kernel that does not compile as launched: report, go on
            message = f"{type(e).__name__}: {e}".strip().splitlines()
            print(json.dumps({"label": spec.label, "error": message[-1] if message else "?"}), flush=True)
            failed.append(spec.label)
            continue
        if args.json:
            print(
                json.dumps({**s.__dict__, "spills": s.spills, "programs_per_sm": s.programs_per_sm}),
                flush=True,
            )
        else:
            print(
                f"{s.label:44} {s.registers:5d} {s.spill_stores:5d}/{s.spill_loads:<6d} "
                f"{s.stack_bytes:6d} {s.shared_bytes:7d} {s.programs_per_sm:3d} {'yes' if s.wgmma else 'no':5} "
                f"{s.seconds:5.1f}"
            )
        if s.spills and s.no_spill:
            failed.append(s.label)
    if failed:
        print(f"kernels that do not compile, or spill where they must not: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
