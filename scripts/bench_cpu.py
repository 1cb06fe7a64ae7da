#!/usr/bin/env python
"""CPU benchmark of the foundation: nemo_ref vs transformers on one synthetic Nemo-shaped checkpoint.

In one run, on a random-weight checkpoint of preset ``nemo-mid`` (Nemo's real head geometry: 32
query heads of 128 over 8 KV heads, vocab 131072; 4 layers, dim 1024) written in both published
layouts (bf16, as Nemo is published):

* **decode**: batch-1 greedy decoding, tokens/s after the prefill, nemo_ref (its static KV cache) vs
  transformers' MistralForCausalLM (its DynamicCache), both driven by the same plain loop
  (prefill, then one token per forward, argmax), same dtype, same torch threads. transformers'
  ``generate()`` is timed too. The greedy tokens must agree.
* **prefill**: tokens/s of the prompt's forward pass, same two models.
* **load**: seconds and peak RSS of loading the checkpoint, each in a fresh subprocess (peak
  resident memory, VmHWM, minus the resident memory after imports), against the checkpoint's
  bytes; page cache warm (the files are read once before).

Targets (issue 2): decode >= 1.5x transformers; peak RSS while loading <= 1.2x checkpoint bytes.
Writes ``benchmarks/cpu-foundation.md`` and ``.json``.

    python scripts/bench_cpu.py                      # the full run (a few minutes on 2 cores)
    python scripts/bench_cpu.py --quick --out /tmp/b # a smoke run
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_info import cpu_model  # scripts/ is on sys.path when a script runs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
REPO = Path(__file__).resolve().parent.parent


# ---- load measurement (runs in a fresh subprocess) --------------------------------------------


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_peak() -> int:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that across
    fork+exec, so a child would start with its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def load_child(impl: str, path: str, dtype: str) -> None:
    """Print one JSON line: seconds and peak RSS increase of loading ``path`` with ``impl``."""
    from nemo_ref.checkpoint import load_model

    if impl == "transformers":
        from transformers import MistralForCausalLM

        MistralForCausalLM.__name__  # noqa: B018  (force the lazy import before the baseline)
    gc.collect()
    base = _rss_now()
    t0 = time.perf_counter()
    if impl == "transformers":
        model = MistralForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    else:
        model = load_model(path, dtype=DTYPES[dtype], progress=False)
    seconds = time.perf_counter() - t0
    peak = _rss_peak()
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"seconds": seconds, "peak_rss_increase": peak - base, "model_bytes": model_bytes}))


def measure_load(impl: str, path: Path, dtype: str, repeats: int, threads: int) -> dict:
    runs = []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--load-child", impl, str(path), dtype],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "seconds": min(r["seconds"] for r in runs),
        "peak_rss_increase": max(r["peak_rss_increase"] for r in runs),
        "model_bytes": runs[0]["model_bytes"],
        "runs": runs,
    }


# ---- decode and prefill -----------------------------------------------------------------------


@torch.inference_mode()
def run_nemo_ref(model, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float, list[int]]:
    P = prompt.shape[1]
    kv = model.new_cache(1, P + new_tokens)
    t0 = time.perf_counter()
    tok = model(prompt, 0, cache=kv, last_only=True)[0, -1].argmax()
    t1 = time.perf_counter()
    out = [int(tok)]
    for i in range(new_tokens - 1):
        tok = model(tok.view(1, 1), P + i, cache=kv, last_only=True)[0, -1].argmax()
        out.append(int(tok))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, out


def _cache_kwarg(model) -> str:
    """transformers >= 5.2x calls the KV cache argument ``cache`` (``past_key_values`` before)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.inference_mode()
def run_transformers(model, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float, list[int]]:
    kw = _cache_kwarg(model)
    t0 = time.perf_counter()
    res = model(prompt, use_cache=True, logits_to_keep=1)
    tok = res.logits[0, -1].argmax()
    t1 = time.perf_counter()
    cache, out = getattr(res, kw), [int(tok)]
    for _ in range(new_tokens - 1):
        res = model(tok.view(1, 1), use_cache=True, logits_to_keep=1, **{kw: cache})
        cache = getattr(res, kw)
        tok = res.logits[0, -1].argmax()
        out.append(int(tok))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, out


@torch.inference_mode()
def run_generate(model, prompt: torch.Tensor, new_tokens: int) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    ids = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
    )
    return time.perf_counter() - t0, ids[0, prompt.shape[1] :].tolist()


def bench_dtype(hf_dir: Path, dtype: str, a: argparse.Namespace) -> list[dict]:
    from transformers import MistralForCausalLM

    from nemo_ref.checkpoint import load_model

    ours = load_model(hf_dir, dtype=DTYPES[dtype], progress=False)
    theirs = MistralForCausalLM.from_pretrained(
        hf_dir, dtype=DTYPES[dtype], attn_implementation="sdpa"
    ).eval()
    theirs.generation_config.eos_token_id = None  # decode exactly new_tokens
    vocab = ours.args.vocab_size
    prompt = torch.randint(0, vocab, (1, a.prompt_len), generator=torch.Generator().manual_seed(0))
    out = []
    for threads in a.threads:
        torch.set_num_threads(threads)
        r = bench_models(ours, theirs, prompt, a)
        out.append({"dtype": dtype, "threads": threads, **r})
        print(
            f"{dtype}, {threads} thread(s): decode {r['nemo_ref']['decode_tok_s']:.2f} vs "
            f"{r['transformers']['decode_tok_s']:.2f} tok/s ({r['decode_speedup']:.2f}x), prefill "
            f"{r['nemo_ref']['prefill_tok_s']:.0f} vs {r['transformers']['prefill_tok_s']:.0f} tok/s "
            f"({r['prefill_speedup']:.2f}x), greedy agree {r['greedy_tokens_agree']}",
            flush=True,
        )
    torch.set_num_threads(min(a.threads))
    out[0]["profile"] = {
        "threads": min(a.threads),
        "nemo_ref": profile_decode(run_nemo_ref, ours, prompt),
        "transformers": profile_decode(run_transformers, theirs, prompt),
    }
    return out


def profile_decode(run, model, prompt: torch.Tensor, steps: int = 8) -> dict:
    """Where one decode step's CPU time goes: the weight matmuls vs everything else."""
    from torch.profiler import profile

    run(model, prompt, 2)
    with profile() as prof:
        run(model, prompt[:, :1], steps + 1)  # a 1-token prefill, then `steps` decode steps
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e3  # ms
    mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm")) / 1e3
    calls = sum(e.count for e in events)
    return {
        "ms_per_step": total / (steps + 1),
        "matmul_fraction": mm / total,
        "other_ms_per_step": (total - mm) / (steps + 1),
        "ops_per_step": calls / (steps + 1),
    }


def bench_overhead(a: argparse.Namespace, root: Path) -> dict:
    """Per-step cost where weights are negligible (dim 64, 8 layers, vocab 256): framework overhead."""
    from transformers import MistralForCausalLM

    from nemo_ref.checkpoint import load_model, save_checkpoint
    from nemo_ref.config import ModelArgs
    from nemo_ref.model import Transformer

    args = ModelArgs(
        dim=64,
        n_layers=8,
        head_dim=16,
        hidden_dim=128,
        n_heads=8,
        n_kv_heads=2,
        vocab_size=256,
        max_seq_len=1024,
    )
    save_checkpoint(Transformer(args).init_random(0), root / "overhead", "hf", dtype=torch.float32)
    ours = load_model(root / "overhead", dtype=torch.float32, progress=False)
    theirs = MistralForCausalLM.from_pretrained(root / "overhead", dtype=torch.float32).eval()
    torch.set_num_threads(1)
    prompt = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    steps = 50 if a.quick else 200
    run_nemo_ref(ours, prompt, 8)
    run_transformers(theirs, prompt, 8)
    o, t = [], []
    for _ in range(3):
        o.append(run_nemo_ref(ours, prompt, steps)[1] / (steps - 1) * 1e3)
        t.append(run_transformers(theirs, prompt, steps)[1] / (steps - 1) * 1e3)
    return {
        "model": "dim 64, 8 layers, 8 heads of 16 over 2 KV heads, vocab 256, fp32, 1 thread",
        "nemo_ref_ms_per_step": statistics.median(o),
        "transformers_ms_per_step": statistics.median(t),
    }


def bench_models(ours, theirs, prompt: torch.Tensor, a: argparse.Namespace) -> dict:

    # Warm-up with the measured shapes (oneDNN builds kernels per shape), then interleaved repeats.
    run_nemo_ref(ours, prompt, a.new_tokens)
    run_transformers(theirs, prompt, a.new_tokens)
    run_generate(theirs, prompt, a.new_tokens)
    res: dict[str, list] = {"ours": [], "theirs": [], "generate": []}
    for _ in range(a.repeats):
        res["ours"].append(run_nemo_ref(ours, prompt, a.new_tokens))
        res["theirs"].append(run_transformers(theirs, prompt, a.new_tokens))
        res["generate"].append(run_generate(theirs, prompt, a.new_tokens))

    def rates(runs):
        prefill = statistics.median(a.prompt_len / r[0] for r in runs)
        decode = statistics.median((a.new_tokens - 1) / r[1] for r in runs)
        return prefill, decode

    op, od = rates(res["ours"])
    tp, td = rates(res["theirs"])
    gen = statistics.median(a.new_tokens / r[0] for r in res["generate"])
    ours_tokens = res["ours"][0][2]
    agree = {
        "transformers_loop": res["theirs"][0][2] == ours_tokens,
        "transformers_generate": res["generate"][0][1] == ours_tokens,
        "nemo_ref_repeats": all(r[2] == ours_tokens for r in res["ours"]),
    }
    first_diff = next(
        (i for i, (x, y) in enumerate(zip(ours_tokens, res["theirs"][0][2], strict=True)) if x != y), None
    )
    return {
        "nemo_ref": {"prefill_tok_s": op, "decode_tok_s": od},
        "transformers": {"prefill_tok_s": tp, "decode_tok_s": td, "generate_tok_s_incl_prefill": gen},
        "decode_speedup": od / td,
        "prefill_speedup": op / tp,
        "greedy_tokens_agree": agree,
        "first_disagreement": first_diff,
        "tokens": ours_tokens,
        "raw_seconds": {k: [list(r[:2]) if k != "generate" else [r[0]] for r in v] for k, v in res.items()},
    }


# ---- the run ----------------------------------------------------------------------------------


def machine() -> dict:
    cpu = cpu_model()
    import safetensors
    import transformers

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def write_checkpoints(preset: str, root: Path) -> dict[str, Path]:
    from nemo_ref.checkpoint import save_checkpoint
    from nemo_ref.config import ModelArgs
    from nemo_ref.model import Transformer

    model = Transformer(ModelArgs.preset(preset), dtype=torch.bfloat16).init_random(0)
    dirs = {"hf": root / "hf", "mistral": root / "mistral"}
    for layout, d in dirs.items():
        if not d.exists():
            save_checkpoint(model, d, layout, dtype=torch.bfloat16)
    return dirs


def warm_page_cache(d: Path) -> int:
    total = 0
    for f in sorted(d.glob("*.safetensors")):
        with open(f, "rb") as fh:
            while chunk := fh.read(64 << 20):
                total += len(chunk)
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="nemo-mid")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument(
        "--threads",
        default=",".join(str(t) for t in sorted({1, torch.get_num_threads()})),
        help="comma-separated torch thread counts for decode/prefill (default: 1 and all cores)",
    )
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--load-repeats", type=int, default=2)
    p.add_argument(
        "--workdir", type=Path, default=None, help="where the checkpoints go (default: a temp dir)"
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "cpu-foundation")
    p.add_argument("--quick", action="store_true", help="smoke run: fewer tokens and repeats")
    p.add_argument("--from-json", type=Path, help="only re-render the .md from a results .json")
    p.add_argument("--load-child", nargs=3, metavar=("IMPL", "DIR", "DTYPE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.load_child:
        load_child(*a.load_child)
        return
    if a.from_json:
        result = json.loads(a.from_json.read_text())
        if "verdict_threads" not in result["targets"]["decode_1.5x_transformers"]:
            result["targets"] = evaluate_targets(
                result["decode_prefill"], result["load"], min(result["settings"]["threads"])
            )
            a.from_json.write_text(json.dumps(result, indent=2) + "\n")
        a.from_json.with_suffix(".md").write_text(report(result))
        return
    if a.quick:
        a.prompt_len, a.new_tokens, a.repeats, a.load_repeats = 32, 8, 1, 1
    a.threads = [int(t) for t in a.threads.split(",")]
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['logical_cores']} cores, torch {info['torch']}, threads {a.threads}"
    )

    tmp = None
    if a.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="nemo_ref_bench_")
        a.workdir = Path(tmp.name)
    dirs = write_checkpoints(a.preset, a.workdir)
    from nemo_ref.checkpoint import inspect_checkpoint

    ck = {layout: inspect_checkpoint(d) for layout, d in dirs.items()}
    ck_bytes = ck["hf"]["bytes"]
    print(f"checkpoint: {a.preset}, {ck['hf']['parameters']:,} parameters, {ck_bytes / 1e9:.3f} GB (bf16)")

    loads = {}
    for name, impl, layout, dtype in [
        ("nemo_ref hf bf16", "nemo_ref", "hf", "bf16"),
        ("nemo_ref mistral bf16", "nemo_ref", "mistral", "bf16"),
        ("transformers hf bf16", "transformers", "hf", "bf16"),
        ("nemo_ref hf -> fp32", "nemo_ref", "hf", "fp32"),
    ]:
        warm_page_cache(dirs[layout])
        r = measure_load(impl, dirs[layout], dtype, a.load_repeats, max(a.threads))
        r["rss_over_checkpoint"] = r["peak_rss_increase"] / ck_bytes
        r["rss_over_model"] = r["peak_rss_increase"] / r["model_bytes"]
        r["gb_per_s"] = ck_bytes / 1e9 / r["seconds"]
        loads[name] = r
        print(
            f"load {name}: {r['seconds']:.2f} s, peak RSS +{r['peak_rss_increase'] / 1e9:.3f} GB "
            f"= {r['rss_over_checkpoint']:.2f}x checkpoint"
        )

    runs = []
    for dtype in a.dtypes.split(","):
        runs += bench_dtype(dirs["hf"], dtype, a)
    overhead = bench_overhead(a, a.workdir)
    print(
        f"overhead-bound model: {overhead['nemo_ref_ms_per_step']:.2f} vs "
        f"{overhead['transformers_ms_per_step']:.2f} ms/step"
    )
    info["load_average_at_end"] = os.getloadavg()

    targets = evaluate_targets(runs, loads, min(a.threads))
    result = {
        "machine": info,
        "settings": {
            "preset": a.preset,
            "threads": a.threads,
            "prompt_len": a.prompt_len,
            "new_tokens": a.new_tokens,
            "repeats": a.repeats,
            "checkpoint_bytes": ck_bytes,
            "parameters": ck["hf"]["parameters"],
            "quick": a.quick,
        },
        "load": loads,
        "decode_prefill": runs,
        "overhead": overhead,
        "targets": targets,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(report(result))
    print(f"wrote {a.out.with_suffix('.md')} and .json")
    if tmp is not None:
        tmp.cleanup()


def evaluate_targets(runs: list[dict], loads: dict, verdict_threads: int) -> dict:
    """The issue's targets. Decode is judged on the ``verdict_threads`` rows: on a shared machine the
    multi-threaded rows measure contention more than the code."""
    rows = {
        f"{d['dtype']}, {d['threads']} thread(s)": {
            "speedup": round(d["decode_speedup"], 3),
            "met": d["decode_speedup"] >= 1.5,
            "used_for_verdict": d["threads"] == verdict_threads,
        }
        for d in runs
    }
    rss = {
        name: {
            "ratio": round(loads[name]["rss_over_checkpoint"], 3),
            "met": loads[name]["rss_over_checkpoint"] <= 1.2,
        }
        for name in ("nemo_ref hf bf16", "nemo_ref mistral bf16")
    }
    return {
        "decode_1.5x_transformers": {
            "met": all(v["met"] for v in rows.values() if v["used_for_verdict"]),
            "verdict_threads": verdict_threads,
            "rows": rows,
        },
        "load_peak_rss_1.2x_checkpoint": {"met": all(v["met"] for v in rss.values()), "rows": rss},
    }


def report(r: dict) -> str:
    m, s = r["machine"], r["settings"]
    lines = [
        "# CPU benchmark: foundation (model, checkpoint loading)",
        "",
        f"Written by `scripts/bench_cpu.py`{' (--quick smoke run)' if s['quick'] else ''}. Random weights; "
        f"the numbers measure speed and memory, not quality.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores, {m['memory_gib']} GiB; torch threads: "
        f"{', '.join(map(str, s['threads']))} (loading: {max(s['threads'])})",
        f"- torch {m['torch']}, transformers {m['transformers']}, safetensors {m['safetensors']}, "
        f"Python {m['python']}, {m['platform']}",
        f"- load average at start {tuple(round(x, 2) for x in m['load_average_at_start'])}, at end "
        f"{tuple(round(x, 2) for x in m['load_average_at_end'])} (a shared machine: other jobs ran alongside)",
        "",
        "## Checkpoint",
        "",
        f"Preset `{s['preset']}` (32 query heads of 128 over 8 KV heads, vocab 131072, 4 layers, dim 1024): "
        f"{s['parameters']:,} parameters, {s['checkpoint_bytes']:,} bytes in bf16, written in both layouts "
        "by `save_checkpoint`.",
        "",
        "## Targets",
        "",
    ]
    t = r["targets"]
    dec, rss = t["decode_1.5x_transformers"], t["load_peak_rss_1.2x_checkpoint"]
    used = [f"{k} {v['speedup']:.2f}x" for k, v in dec["rows"].items() if v["used_for_verdict"]]
    other = [f"{k} {v['speedup']:.2f}x" for k, v in dec["rows"].items() if not v["used_for_verdict"]]
    lines.append(
        f"- decode >= 1.5x transformers: **{'met' if dec['met'] else 'NOT met'}** -- {'; '.join(used)}"
        + (
            f" (judged at {dec['verdict_threads']} thread(s); multi-threaded rows on this shared machine "
            f"measure contention and are not used for the verdict: {'; '.join(other)})"
            if other
            else ""
        )
    )
    lines.append(
        f"- peak RSS while loading <= 1.2x checkpoint bytes: **{'met' if rss['met'] else 'NOT met'}** -- "
        + "; ".join(f"{k} {v['ratio']:.2f}x" for k, v in rss["rows"].items())
    )
    lines += [
        "",
        "## Decode and prefill (batch 1, greedy)",
        "",
        f"Prompt {s['prompt_len']} tokens, then {s['new_tokens']} greedy tokens; decode rate excludes the "
        f"prefill; median of {s['repeats']} interleaved repeats. Both models are driven by the same loop "
        "(one forward per token, argmax); transformers uses its default CPU attention (sdpa) and "
        "DynamicCache, nemo_ref sdpa and its static cache. `generate()` = transformers' own greedy "
        "generate, tokens/s including the prefill.",
        "",
        "| dtype | threads | nemo_ref decode tok/s | transformers decode tok/s | speedup | nemo_ref prefill "
        "tok/s | transformers prefill tok/s | speedup | transformers generate() tok/s | greedy tokens agree |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in r["decode_prefill"]:
        o, th = d["nemo_ref"], d["transformers"]
        agree = d["greedy_tokens_agree"]
        ok = (
            "yes"
            if agree["transformers_loop"] and agree["transformers_generate"]
            else (f"no (first differs at token {d['first_disagreement']})")
        )
        lines.append(
            f"| {d['dtype']} | {d['threads']} | {o['decode_tok_s']:.2f} | {th['decode_tok_s']:.2f} | {d['decode_speedup']:.2f}x | "
            f"{o['prefill_tok_s']:.0f} | {th['prefill_tok_s']:.0f} | {d['prefill_speedup']:.2f}x | "
            f"{th['generate_tok_s_incl_prefill']:.1f} | {ok} |"
        )
    prof = next((d["profile"] for d in r["decode_prefill"] if "profile" in d), None)
    lines += ["", "### Where a decode step's time goes", ""]
    for d in r["decode_prefill"]:
        if "profile" not in d:
            continue
        pr = d["profile"]
        lines.append(
            f"- {d['dtype']}, {pr['threads']} thread (torch.profiler, 8 steps): "
            + "; ".join(
                f"{impl} {pr[impl]['ms_per_step']:.1f} ms/step, {pr[impl]['matmul_fraction']:.0%} in aten::mm, "
                f"{pr[impl]['other_ms_per_step']:.1f} ms in everything else ({pr[impl]['ops_per_step']:.0f} ops)"
                for impl in ("nemo_ref", "transformers")
            )
        )
    ov = r["overhead"]
    lines += [
        f"- Overhead-bound model ({ov['model']}): nemo_ref {ov['nemo_ref_ms_per_step']:.2f} ms/step, "
        f"transformers {ov['transformers_ms_per_step']:.2f} ms/step.",
        "",
        "Batch-1 decode reads every weight once per token. With Nemo's 131072-token vocabulary the "
        "output projection alone is 38% of nemo-mid's weights, and both implementations call the "
        "same `aten::mm` on the same weights"
        + (
            f" ({prof['nemo_ref']['matmul_fraction']:.0%} and {prof['transformers']['matmul_fraction']:.0%} "
            "of the step)"
            if prof
            else ""
        )
        + ". Removing all the rest would gain at most the non-matmul share, so on this CPU a 1.5x decode "
        "speed-up over transformers needs fewer bytes per token (quantized weights), not a leaner "
        "forward. Multi-threaded rows on a shared 2-core machine are dominated by contention "
        "(OpenMP threads waiting for a descheduled sibling): compare the 1-thread rows.",
        "",
        "## Loading (fresh subprocess each, warm page cache)",
        "",
        "Peak RSS increase = peak resident memory (VmHWM) after loading minus the resident memory "
        "after imports.",
        "",
        "| what | seconds | GB/s (checkpoint bytes) | peak RSS increase | / checkpoint bytes | / model bytes |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in r["load"].items():
        lines.append(
            f"| {name} | {v['seconds']:.2f} | {v['gb_per_s']:.2f} | {v['peak_rss_increase'] / 1e9:.3f} GB | "
            f"{v['rss_over_checkpoint']:.2f}x | {v['rss_over_model']:.2f}x |"
        )
    lines += [
        "",
        "nemo_ref reads each tensor with safetensors' `pread` backend into the parameter's own memory, so "
        "peak memory is the model itself (plus one tensor in the stored dtype when converting, e.g. bf16 -> "
        "fp32). transformers 5 memory-maps the files and keeps bf16 parameters as views of the mapping: its "
        "load returns before reading the data (its pages are read, and counted, on first use), so its "
        "seconds and RSS here are not the cost of reading the weights.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
