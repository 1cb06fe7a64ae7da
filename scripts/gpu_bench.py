"""Check the Triton kernels against torch on a GPU, then time them; write benchmarks/gpu-<card>.*

    python scripts/gpu_bench.py              # on a machine with a CUDA GPU (~5-10 minutes)
    python scripts/gpu_bench.py --dry-run    # the whole script at tiny sizes, interpreter, CPU

1. Correctness first: prefill and decode attention (bf16/fp16/fp32, GQA, offsets, ragged rows) vs
   float32 torch math; the sampler vs nemo_ref's batched float64 sampler; the sort-based torch
   baseline vs the kernel; the full model on the Triton backend vs SDPA. Any failure stops here.
2. Timings (triton.testing.do_bench: median, L2 flushed before every run), each next to a baseline
   measured in the same run: prefill vs torch SDPA (flash backend) at S = 1k..32k; decode vs the
   card's measured copy bandwidth at context 4k..128k, and the split count swept at 128k; the
   sampler vs a sort-based torch sampler at batch 1..256; batch-1 decode tokens/s of the
   full-size Nemo-12B architecture (random bf16 weights) at context 128 and 32k, Triton with and
   without CUDA-graph capture and SDPA, vs the floor copy bandwidth / (23.15 GB + KV bytes). Every
   shape is run once before it is timed (no JIT compile in a timed loop).
Writes JSON + Markdown named after the card (or dry-run-cpu.* with --dry-run) under --out.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
BYTES_PER_TOKEN_12B = 23.15e9  # weights read by one batch-1 decode step of Nemo-12B (bf16)


@dataclass(frozen=True)
class Sizes:
    device: str
    heads: tuple[int, int, int]  # H, Hkv, D
    prefill_seq: tuple[int, ...]
    decode_ctx: tuple[int, ...]
    decode_batch: tuple[int, ...]  # at the first decode context
    sampler_batch: tuple[int, ...]
    vocab: int
    preset: str
    prompt_len: int
    new_tokens: int
    copy_bytes: int
    e2e_ctx: tuple[int, ...]  # contexts of the end-to-end decode (the cache filled at random)
    split_sweep: tuple[int, ...]  # max_splits values timed at the longest decode context


FULL = Sizes("cuda", (32, 8, 128), (1024, 2048, 4096, 8192, 16384, 32768),
             (4096, 8192, 16384, 32768, 65536, 131072), (1, 8, 32, 64), (1, 8, 32, 128, 256),
             131072, "nemo-12b", 128, 64, 1 << 30, (128, 32768), (8, 16, 32, 50, 64, 128, 256))  # fmt: skip
DRY = Sizes("cpu", (8, 2, 32), (48, 80), (40, 100), (1, 3), (1, 3), 1000, "nemo-tiny", 5, 2, 1 << 20, (5, 40),
            (1, 2))  # fmt: skip


def import_nemo_ref() -> None:
    """Import nemo_ref from this checkout; map kernels/ to nemo_ref.kernels if not installed."""
    sys.path.insert(0, str(ROOT))
    import nemo_ref

    if importlib.util.find_spec("nemo_ref.kernels") is None:  # what pyproject's package-dir does
        spec = importlib.util.spec_from_file_location(
            "nemo_ref.kernels", ROOT / "kernels" / "__init__.py",
            submodule_search_locations=[str(ROOT / "kernels")],
        )  # fmt: skip
        module = importlib.util.module_from_spec(spec)
        sys.modules["nemo_ref.kernels"] = module
        spec.loader.exec_module(module)
        nemo_ref.kernels = module


class Bench:
    """Timing and reporting shared by the sections."""

    def __init__(self, sizes: Sizes, dry: bool):
        self.sizes, self.dry = sizes, dry
        self.dev = torch.device(sizes.device)
        self.checks: list[dict] = []

    def ms(self, fn: Callable[[], object]) -> float:
        if self.dry:  # the interpreter: one run, for the code path only (do_bench needs a GPU)
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))

    def check(self, name: str, err: float, tol: float) -> None:
        ok = bool(err <= tol)  # NaN fails
        self.checks.append({"name": name, "ok": ok, "max_err": float(err), "tol": tol})
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {err:.3g} (tol {tol:g})", flush=True)

    def randn(self, *shape, dtype=None):
        return torch.randn(*shape, device=self.dev, dtype=dtype or torch.bfloat16)


# ---- attention ----------------------------------------------------------------------------------


def attention_reference(q, k, v, start_pos):
    """softmax(q k^T / sqrt(D) + causal mask) v in float32, K/V expanded per group."""
    H, T, D = q.shape[1:]
    Hkv, S = k.shape[1], k.shape[2]
    k = k.float().repeat_interleave(H // Hkv, 1)
    v = v.float().repeat_interleave(H // Hkv, 1)
    s = q.float() @ k.transpose(-1, -2) * D**-0.5
    q_pos = start_pos[:, None] + torch.arange(T, device=q.device)
    visible = torch.arange(S, device=q.device)[None, None] <= q_pos[:, :, None]
    return s.masked_fill(~visible[:, None], float("-inf")).softmax(-1) @ v


def check_attention(b: Bench) -> None:
    from nemo_ref.kernels import attention as A

    H, Hkv, D = b.sizes.heads
    tol = {torch.bfloat16: 2e-2, torch.float16: 3e-3, torch.float32: 1e-4}
    for dtype in tol:
        for T, starts in ((1, [0, 37, 1000, 299]), (77, [0, 300])) if b.dry else (
            (1, [0, 1000, 4097, 30000]), (300, [0, 157]), (2048, [0, 1])
        ):  # fmt: skip
            start_pos = torch.tensor(starts, device=b.dev)
            S = max(starts) + T + 5
            q = b.randn(len(starts), H, T, D, dtype=dtype)
            k, v = (b.randn(len(starts), S, Hkv, D, dtype=dtype).transpose(1, 2) for _ in "kv")
            out = A.attention(q, k, v, start_pos)
            ref = attention_reference(q, k, v, start_pos)
            err = ((out.float() - ref).abs() / (1 + ref.abs())).max().item()
            kind = "decode" if T == 1 else "prefill"
            b.check(f"{kind} {str(dtype)[6:]} T={T} start={starts} H={H}/{Hkv}", err, tol[dtype])


def sdpa(q, k, v, causal: bool, flash: bool) -> tuple[Callable[[], torch.Tensor], str]:
    """A torch SDPA call with native GQA (only the flash backend when asked), and its label. If
    the backend refuses GQA, K/V are expanded here, outside the timed call, and the label says so."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run(k=k, v=v, gqa=True) -> torch.Tensor:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]) if flash else nullcontext():
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

    label = "flash" if flash else "default"
    try:
        run()
        return run, label
    except RuntimeError:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        return (lambda: run(k, v, False)), label + ", K/V expanded beforehand"


def bench_prefill(b: Bench) -> list[dict]:
    from nemo_ref.kernels import attention as A

    H, Hkv, D = b.sizes.heads
    flash = not b.dry  # the flash backend is CUDA-only
    rows = []
    for S in b.sizes.prefill_seq:
        q, k, v = b.randn(1, H, S, D), b.randn(1, Hkv, S, D), b.randn(1, Hkv, S, D)
        zero = torch.zeros(1, dtype=torch.long, device=b.dev)
        flops = 4 * H * D * S * (S + 1) / 2  # visible (query, key) pairs x (QK^T + PV)
        t = b.ms(lambda q=q, k=k, v=v, zero=zero: A.prefill_attention(q, k, v, zero))
        baseline, label = sdpa(q, k, v, causal=True, flash=flash)
        t_sdpa = b.ms(baseline)
        rows.append({"seq_len": S, "heads": f"{H}/{Hkv}x{D}", "sdpa": label,
                     "triton_ms": t,
                     "triton_tflops": flops / t / 1e9, "sdpa_ms": t_sdpa,
                     "sdpa_tflops": flops / t_sdpa / 1e9})  # fmt: skip
        print(f"  prefill S={S}: triton {t:.3f} ms, sdpa {t_sdpa:.3f} ms", flush=True)
    return rows


def copy_gb_s(b: Bench) -> float:
    x = torch.empty(b.sizes.copy_bytes, dtype=torch.uint8, device=b.dev)
    y = torch.empty_like(x)
    return 2 * x.numel() / b.ms(lambda: y.copy_(x)) / 1e6  # read + write


def bench_decode(b: Bench, copy_bw: float) -> list[dict]:
    from nemo_ref.kernels import attention as A

    H, Hkv, D = b.sizes.heads
    rows = []
    cases = [(1, S) for S in b.sizes.decode_ctx] + [
        (B, b.sizes.decode_ctx[0]) for B in b.sizes.decode_batch[1:]
    ]
    for B, S in cases:
        q, k, v = b.randn(B, H, 1, D), b.randn(B, Hkv, S, D), b.randn(B, Hkv, S, D)
        last = torch.full((B,), S - 1, device=b.dev)
        kv_bytes = 2 * k.numel() * k.element_size()
        t = b.ms(lambda q=q, k=k, v=v, last=last: A.decode_attention(q, k, v, last))
        baseline, label = sdpa(q, k, v, causal=False, flash=False)
        t_sdpa = b.ms(baseline)
        gb_s = kv_bytes / t / 1e6
        rows.append({"context": S, "batch": B, "sdpa": label,
                     "kv_mib": kv_bytes / 2**20, "triton_ms": t,
                     "triton_gb_s": gb_s, "pct_of_copy_bw": 100 * gb_s / copy_bw,
                     "sdpa_ms": t_sdpa, "sdpa_gb_s": kv_bytes / t_sdpa / 1e6})  # fmt: skip
        print(
            f"  decode B={B} ctx={S}: triton {t:.3f} ms ({gb_s:.0f} GB/s), sdpa {t_sdpa:.3f} ms", flush=True
        )
    return rows


# ---- sampler ------------------------------------------------------------------------------------


def torch_sort_sampler(logits, temperature, top_k, top_p, u):
    """The usual sort-based sampler (temperature, top_k, top_p on a sorted vocabulary, then a
    cumsum draw in rank order): the baseline. Returns (tokens, probabilities in id order)."""
    z = logits / temperature[:, None]
    V = z.shape[1]
    if bool((top_k > 0).any() | (top_p < 1).any()):
        z, ids = z.sort(dim=1, descending=True)
        rank = torch.arange(V, device=z.device)
        z = z.masked_fill(rank >= torch.where(top_k > 0, top_k, V)[:, None], float("-inf"))
        q = z.softmax(1)
        z = z.masked_fill((q.cumsum(1) - q >= top_p[:, None]) & (rank > 0), float("-inf"))
    else:
        ids = None
    q = z.softmax(1)
    cdf = q.cumsum(1)
    pos = torch.searchsorted(cdf, (u[:, None] * cdf[:, -1:]).to(cdf.dtype)).clamp(max=V - 1)
    if ids is None:
        return pos[:, 0], q
    return ids.gather(1, pos)[:, 0], torch.zeros_like(q).scatter(1, ids, q)


SETTINGS = {"T=1": (1.0, 0, 1.0), "T=0.8 top_k=50 top_p=0.9": (0.8, 50, 0.9)}


def check_sampler(b: Bench) -> None:
    from nemo_ref.kernels import sampling as K

    from nemo_ref.sampling import SamplingParams
    from nemo_ref.sampling.metadata import SampleRow, build_metadata
    from nemo_ref.sampling.sampler import TorchSampler, TritonSampler

    V = b.sizes.vocab
    g = torch.Generator(device=b.dev).manual_seed(0)
    logits = torch.randn(6, V, generator=g, device=b.dev) * 3
    logits[3] = torch.round(logits[3])  # ties
    hist = list(range(0, V, max(1, V // 40)))
    params = [SamplingParams(temperature=0.7, top_k=50, top_p=0.9), SamplingParams(min_p=0.05),
              SamplingParams(temperature=1.3, top_p=0.5, repetition_penalty=1.3,
                             presence_penalty=0.5, frequency_penalty=0.2, logit_bias={5: 4.0}),
              SamplingParams(top_k=40), SamplingParams(temperature=0), SamplingParams()]  # fmt: skip
    rows = [SampleRow(p, 0, 0, 0, hist[:20], hist[20:] + hist[25:30]) for p in params]
    meta = build_metadata(rows, V, b.dev)  # one step's metadata, read by both backends
    got = TritonSampler().distribution(logits, meta)
    want = TorchSampler().distribution(logits, meta)
    wrong_set = ((got > 0) & (want == 0)) | ((got == 0) & (want > 1e-30))
    b.check("sampler kept sets vs batched (float64)", float(wrong_set.sum()), 0)
    b.check("sampler probabilities vs batched (float64)", (got.double() - want).abs().max().item(), 1e-5)
    lp, _, _ = K.raw_logprobs(logits, top_n=5)
    b.check("raw_logprobs vs torch.log_softmax", (lp - logits.log_softmax(1)).abs().max().item(), 1e-4)
    smooth = logits[[0, 1, 2, 4, 5]]  # no ties: the sort-based baseline has the same semantics
    for name, (t, k, p) in SETTINGS.items():
        T, kk, pp = (torch.full((5,), x, device=b.dev) for x in (t, k, p))
        probs = K.probabilities(smooth, temperature=T, top_k=kk.int(), top_p=pp.double(), min_p=0.0)
        _, base = torch_sort_sampler(smooth, T, kk, pp, torch.zeros(5, device=b.dev))
        b.check(f"sort-based baseline vs kernel ({name})", (probs - base).abs().max().item(), 1e-5)


def bench_sampler(b: Bench) -> list[dict]:
    from nemo_ref.kernels import sampling as K

    rows = []
    for B in b.sizes.sampler_batch:
        logits = torch.randn(B, b.sizes.vocab, device=b.dev) * 3
        u = torch.rand(B, device=b.dev, dtype=torch.float64)
        for name, (t, k, p) in SETTINGS.items():
            T, kk, pp = (torch.full((B,), x, device=b.dev) for x in (t, k, p))
            kk, pp = kk.int(), pp.double()
            t_k = b.ms(lambda lg=logits, u=u, T=T, kk=kk, pp=pp: K.sample(
                lg, temperature=T, top_k=kk, top_p=pp, min_p=0.0, u=u, check=False))  # fmt: skip
            t_s = b.ms(lambda lg=logits, u=u, T=T, kk=kk, pp=pp: torch_sort_sampler(lg, T, kk, pp, u))
            rows.append({"batch": B, "setting": name, "vocab": b.sizes.vocab, "triton_ms": t_k,
                         "torch_sort_ms": t_s, "speedup": t_s / t_k})  # fmt: skip
            print(f"  sampler B={B} {name}: triton {t_k:.3f} ms, sort {t_s:.3f} ms", flush=True)
    return rows


# ---- end to end ---------------------------------------------------------------------------------


def build_model(b: Bench):
    import nemo_ref

    args = nemo_ref.ModelArgs.preset(b.sizes.preset)
    model = nemo_ref.Transformer(args, attn_backend="triton", device=b.dev, dtype=torch.bfloat16)
    with torch.no_grad():  # random weights drawn on the device (12B on the CPU would take minutes)
        for name, p in model.named_parameters():
            p.fill_(1.0) if name.endswith("norm.weight") else p.normal_(0, 0.02)
    return model


def check_model(b: Bench, model) -> None:
    prompt = torch.randint(0, model.args.vocab_size, (1, b.sizes.prompt_len), device=b.dev)
    out = {}
    for backend in ("triton", "sdpa"):
        model.set_attn_backend(backend)
        kv = model.new_cache(1, b.sizes.prompt_len + 3)
        logits = [model(prompt, 0, cache=kv)[:, -1]]
        for i in range(2):  # two decode steps on the same cache
            logits.append(model(prompt[:, i : i + 1], b.sizes.prompt_len + i, cache=kv)[:, -1])
        out[backend] = torch.cat(logits).float()
    cos = torch.nn.functional.cosine_similarity(out["triton"], out["sdpa"], dim=1).min().item()
    b.check(f"{b.sizes.preset} logits, triton vs sdpa backend (1 - cosine)", 1 - cos, 5e-3)


def fill_cache(cache, context: int) -> None:
    """Random keys/values at positions 0..context-1: a decode step reads the same bytes as after a
    real prefill (which would take minutes at 32k for the 12B model, and is timed separately)."""
    for t in (*cache.k, *cache.v):
        t[:, :, :context].normal_()


def bench_model(b: Bench, model, copy_bw: float) -> list[dict]:
    """Batch-1 greedy decode tokens/s at each context, Triton (plain and CUDA-graph captured) and
    SDPA. Every configuration runs its whole loop once first: each shape the loop meets is
    compiled (Triton specialises ints such as the split count) and captured before the clock
    starts, so no JIT compile lands in the timed loop."""
    from nemo_ref.model import GraphedDecode

    rows = []
    n = b.sizes.new_tokens
    a = model.args
    kv_per_token = 2 * a.n_layers * a.n_kv_heads * a.head_dim * 2  # bf16 K and V
    for context in b.sizes.e2e_ctx:
        cache = model.new_cache(1, context + n + 1)
        fill_cache(cache, context)
        # The weight-read floor applies to the full-size model only (None for the dry run's tiny one).
        per_token = BYTES_PER_TOKEN_12B + kv_per_token * (context + n / 2)
        floor = copy_bw * 1e9 / per_token if b.sizes.preset == "nemo-12b" else None
        for backend, graph in (("triton", False), ("triton", True), ("sdpa", False)):
            model.set_attn_backend(backend)
            first = torch.randint(0, a.vocab_size, (1, 1), device=b.dev)
            if graph:
                step = GraphedDecode(model, cache)  # warms up and captures (on a GPU)

                def run(step=step, first=first, context=context):
                    token, start = first, torch.full((1,), context, device=b.dev)
                    for _ in range(n):
                        token = step(token, start).argmax(-1, keepdim=True)
                        start += 1
                    return token
            else:

                def run(first=first, context=context, cache=cache):
                    token = first
                    for i in range(n):  # one token per forward, nothing leaves the device
                        token = model(token, context + i, last_only=True, cache=cache)[:, -1].argmax(
                            -1, keepdim=True
                        )
                    return token

            run()  # warm every shape of the loop
            if not b.dry:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run()
            if not b.dry:
                torch.cuda.synchronize()
            tok_s = n / (time.perf_counter() - t0)
            rows.append({"backend": backend, "step": ("cuda graph" if not b.dry else "capturable, uncaptured") if graph else "plain", "preset": b.sizes.preset,
                         "context": context, "new_tokens": n, "tok_s": tok_s, "floor_tok_s": floor,
                         "pct_of_floor": None if floor is None else 100 * tok_s / floor})  # fmt: skip
            print(f"  {b.sizes.preset} batch-1 decode at {context}, {backend}{' + graph' * graph}: "
                  f"{tok_s:.1f} tok/s (floor {floor})", flush=True)  # fmt: skip
        del cache
    return rows


def bench_splits(b: Bench, copy_bw: float) -> list[dict]:
    """Decode attention at the longest context, batch 1, against the number of splits per row:
    the record behind ``decode_max_splits`` (3 programs per SM)."""
    from nemo_ref.kernels import attention as A

    H, Hkv, D = b.sizes.heads
    S = b.sizes.decode_ctx[-1]
    q, k, v = b.randn(1, H, 1, D), b.randn(1, Hkv, S, D), b.randn(1, Hkv, S, D)
    last = torch.full((1,), S - 1, device=b.dev)
    kv_bytes = 2 * k.numel() * k.element_size()
    rows = []
    default = A.decode_max_splits(Hkv, A.sm_count(b.dev))
    for max_splits in sorted({*b.sizes.split_sweep, default}):
        t = b.ms(lambda m=max_splits: A.decode_attention(q, k, v, last, max_splits=m))
        gb_s = kv_bytes / t / 1e6
        split = A.decode_split_len(S, max_splits)
        rows.append({"context": S, "max_splits": max_splits, "split_len": split, "default": max_splits == default,
                     "triton_ms": t, "triton_gb_s": gb_s, "pct_of_copy_bw": 100 * gb_s / copy_bw})  # fmt: skip
        print(f"  decode splits={max_splits} (split {split}): {t:.3f} ms, {gb_s:.0f} GB/s", flush=True)
    return rows


# ---- report -------------------------------------------------------------------------------------


def markdown(r: dict) -> str:
    lines = [f"# Kernel benchmarks: {r['card']}", ""]
    if r["dry_run"]:
        lines += ["**Dry run** (interpreter on CPU, tiny sizes): the numbers exercise the script "
                  "and mean nothing about speed.", ""]  # fmt: skip
    lines += [f"torch {r['torch']}, triton {r['triton']}, {r['date']}; measured copy bandwidth "
              f"{r['copy_gb_s']:.0f} GB/s.", "", "## Correctness", ""]  # fmt: skip
    lines += [
        f"- {'ok' if c['ok'] else 'FAIL'}: {c['name']} ({c['max_err']:.3g} <= {c['tol']:g})"
        for c in r["checks"]
    ]
    for section in ("prefill", "decode", "decode_splits", "sampler", "e2e"):
        records = r.get(section) or []
        if not records:
            continue
        cols = list(records[0])
        lines += ["", f"## {section}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for rec in records:
            cells = [f"{x:.4g}" if isinstance(x, float) else str(x) for x in rec.values()]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, interpreter, CPU")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    parser.add_argument("--skip", default="", help="comma list of: prefill,decode,sampler,e2e")
    a = parser.parse_args(argv)
    if a.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported
    import_nemo_ref()
    import triton

    skip = set(filter(None, a.skip.split(",")))
    if not a.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA GPU: use --dry-run")
    sizes = DRY if a.dry_run else FULL
    b = Bench(sizes, a.dry_run)
    card = "cpu (interpreter dry run)" if a.dry_run else torch.cuda.get_device_name()
    print(f"{card}: checking", flush=True)
    torch.manual_seed(0)
    check_attention(b)
    check_sampler(b)
    model = build_model(b) if "e2e" not in skip else None
    if model is not None:
        check_model(b, model)
    report = {"card": card, "dry_run": a.dry_run, "torch": torch.__version__,
              "triton": triton.__version__, "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "checks": b.checks}  # fmt: skip
    if all(c["ok"] for c in b.checks):
        print("timing", flush=True)
        report["copy_gb_s"] = copy_gb_s(b)
        if "prefill" not in skip:
            report["prefill"] = bench_prefill(b)
        if "decode" not in skip:
            report["decode"] = bench_decode(b, report["copy_gb_s"])
            report["decode_splits"] = bench_splits(b, report["copy_gb_s"])
        if "sampler" not in skip:
            report["sampler"] = bench_sampler(b)
        if model is not None:
            report["e2e"] = bench_model(b, model, report["copy_gb_s"])
    else:
        report["copy_gb_s"] = math.nan
        print("correctness checks failed: no timings", file=sys.stderr)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = "dry-run-cpu" if a.dry_run else "gpu-" + re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    (a.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (a.out / f"{stem}.md").write_text(markdown(report))
    print(f"wrote {a.out / stem}.json and .md")
    return 0 if all(c["ok"] for c in b.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
