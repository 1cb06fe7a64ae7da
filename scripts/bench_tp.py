#!/usr/bin/env python
"""Tensor-parallel benchmark on CPU (gloo): per-rank memory and bytes read, and decode step time.

In one run, on a random-weight checkpoint of preset ``nemo-mid`` (Nemo's head geometry: 32 query
heads of 128 over 8 KV heads, vocab 131072; 4 layers, dim 1024) written in both layouts in bf16:

* **memory**: each process loads the checkpoint in a fresh process -- the single-process
  ``load_model`` (the baseline), and every rank of ``load_model_tp`` for N = 2 -- and reports the
  bytes of its parameters, the bytes it read (``rchar`` of /proc/self/io, counted by the kernel,
  and the loader's own count), and its peak resident memory while loading (VmHWM minus the resident
  memory after imports and joining the process group). Target: each rank <= 1.1 / N of the
  single-process figure.
* **decode**: batch-1 greedy decoding after a 128-token prompt, median ms per step, for the single
  process (1 and 2 torch threads) and for N = 1 and 2 ranks driven from rank 0 (TPDriver; 1 torch
  thread per rank). On this 2-core machine N = 2 uses both cores, one per rank.

Writes ``benchmarks/tp-cpu.md`` and ``.json``.

    python scripts/bench_tp.py                       # the full run (about a minute on 2 cores)
    python scripts/bench_tp.py --quick --out /tmp/b  # a smoke run (nemo-small, fewer steps)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine_info import cpu_model  # scripts/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parent.parent


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_peak() -> int:
    """VmHWM (not ru_maxrss, which Linux carries across fork+exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


# ---- one process (a rank, or the single-process baseline) ---------------------------------------


@torch.inference_mode()
def _decode(model, prompt_len: int, steps: int) -> tuple[list[float], float]:
    """Greedy decode after a prompt of ``prompt_len`` tokens: seconds of each step, then the ms per
    step spent in torch.distributed's collectives over 8 more, profiled, steps."""
    from torch.profiler import profile

    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(1000, model.args.vocab_size, (1, prompt_len), generator=g)
    cache = model.new_cache(1, prompt_len + steps + 9)
    tok = model(prompt, 0, last_only=True, cache=cache)[0, -1].argmax()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        tok = model(tok.view(1, 1), prompt_len + i, last_only=True, cache=cache)[0, -1].argmax()
        times.append(time.perf_counter() - t0)
    with profile() as prof:
        for i in range(steps, steps + 8):
            tok = model(tok.view(1, 1), prompt_len + i, last_only=True, cache=cache)[0, -1].argmax()
    comm_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("c10d::"))
    return times, comm_us / 1000 / 8


def worker(mode: str, path: str, out: str, prompt_len: int, steps: int) -> None:
    """``mode``: "single" (checkpoint.load_model) or "tp" (a rank of load_model_tp, torchrun's env)."""
    from nemo_ref.checkpoint import load_model

    rank = 0
    if mode == "tp":
        import torch.distributed as dist

        from nemo_ref.tp import init_from_env
        from nemo_ref.tp_driver import TPDriver, follow
        from nemo_ref.tp_load import load_model_tp

        init_from_env("cpu")
        rank = dist.get_rank()
    base, rchar0 = _rss_now(), _rchar()
    t0 = time.perf_counter()
    if mode == "tp":
        model = load_model_tp(path, dtype=torch.bfloat16, progress=False)
    else:
        model = load_model(path, dtype=torch.bfloat16, progress=False)
    record = {
        "rank": rank,
        "load_s": time.perf_counter() - t0,
        "peak_rss_increase": _rss_peak() - base,
        "rchar": _rchar() - rchar0,
        "loader_bytes_read": getattr(model, "tp_bytes_read", None),
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
    }
    if steps:
        if mode == "tp" and rank != 0:
            follow(model)
        else:
            driven = TPDriver(model) if mode == "tp" else model
            record["step_s"], record["comm_ms_per_step"] = _decode(driven, prompt_len, steps)
            if mode == "tp":
                driven.shutdown()
    Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    if mode == "tp":
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(mode: str, ranks: int, path: Path, threads: int, prompt_len: int, steps: int) -> list[dict]:
    """Run ``ranks`` worker processes (torchrun's environment, as torchrun would set it)."""
    with tempfile.TemporaryDirectory() as out:
        port = _free_port()
        procs = []
        for r in range(ranks):
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            if mode == "tp":
                env.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(ranks))
                env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            cmd = [sys.executable, __file__, "--worker", mode, str(path), out, str(prompt_len), str(steps)]
            procs.append(subprocess.Popen(cmd, env=env))
        for p in procs:
            if p.wait(timeout=900):
                raise SystemExit(f"a {mode} worker failed (exit {p.returncode})")
        return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(ranks)]


# ---- the run -------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="nemo-mid")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="decode runs per configuration (median)")
    ap.add_argument("--quick", action="store_true", help="nemo-small, 8 steps, 1 repeat")
    ap.add_argument("--out", default=str(REPO / "benchmarks"))
    args = ap.parse_args()
    if args.quick:
        args.preset, args.steps, args.repeats = "nemo-small", 8, 1

    from nemo_ref.checkpoint import save_checkpoint
    from nemo_ref.config import ModelArgs
    from nemo_ref.model import Transformer

    load_start = os.getloadavg()
    tmp = tempfile.TemporaryDirectory()
    margs = ModelArgs.preset(args.preset)
    model = Transformer(margs, dtype=torch.bfloat16).init_random(0)
    paths = {layout: Path(tmp.name, layout) for layout in ("mistral", "hf")}
    for layout, path in paths.items():
        save_checkpoint(
            model, path, layout, dtype=torch.bfloat16, metadata={"nemo_ref.random_weights": "true"}
        )
        for f in path.glob("*.safetensors"):
            f.read_bytes()  # warm the page cache: the figures compare reads, not the disk
    ckpt_bytes = sum(p.numel() * 2 for p in model.parameters())
    del model

    memory = []
    for layout, path in paths.items():
        (single,) = launch("single", 1, path, 2, args.prompt, 0)
        memory.append({"layout": layout, "ranks": 1, "mode": "single", "per_rank": [single]})
        for n in (2,):
            memory.append(
                {
                    "layout": layout,
                    "ranks": n,
                    "mode": "tp",
                    "per_rank": launch("tp", n, path, 1, args.prompt, 0),
                }
            )

    decode = []
    configs = [("single", 1, 1), ("single", 1, 2), ("tp", 1, 1), ("tp", 2, 1)]
    runs: dict[tuple, list[dict]] = {c: [] for c in configs}
    for _ in range(args.repeats):  # interleaved, so a burst of load on the shared machine hits all
        for mode, n, threads in configs:
            rank0 = launch(mode, n, paths["mistral"], threads, args.prompt, args.steps)[0]
            step_ms = statistics.median(rank0["step_s"]) * 1000
            runs[(mode, n, threads)].append({"step_ms": step_ms, "comm_ms": rank0["comm_ms_per_step"]})
    for (mode, n, threads), rs in runs.items():
        decode.append(
            {
                "mode": mode,
                "ranks": n,
                "threads_per_rank": threads,
                "step_ms": statistics.median(r["step_ms"] for r in rs),
                "comm_ms": statistics.median(r["comm_ms"] for r in rs),
                "runs": rs,
            }
        )

    result = {
        "preset": args.preset,
        "checkpoint_bytes": ckpt_bytes,
        "prompt": args.prompt,
        "steps": args.steps,
        "repeats": args.repeats,
        "memory": memory,
        "decode": decode,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tp-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "tp-cpu.md").write_text(report(result, margs))
    print((out / "tp-cpu.md").read_text())


def report(r: dict, margs) -> str:
    m = r["machine"]
    lines = [
        "# Tensor parallelism on CPU (gloo)",
        "",
        "Written by `scripts/bench_tp.py`. Random weights; the numbers measure memory and speed, not quality.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} logical cores; torch {m['torch']}, Python {m['python']}, {m['platform']}",
        f"- load average at start {tuple(round(x, 2) for x in m['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in m['loadavg_end'])} (a shared machine: other jobs ran alongside)",
        "- No GPU was available to this run: no GPU figures.",
        "",
        "## Checkpoint",
        "",
        f"Preset `{r['preset']}` ({margs.n_heads} query heads of {margs.head_dim} over {margs.n_kv_heads} KV heads, "
        f"vocab {margs.vocab_size}, {margs.n_layers} layers, dim {margs.dim}), {r['checkpoint_bytes']:,} bytes "
        "in bf16, both layouts.",
        "",
        "## Memory and bytes read, per rank (target: <= 1.1 / N of the single process)",
        "",
        "Each row is one process loading the checkpoint in bf16 (page cache warm). Peak RSS increase = "
        "VmHWM after loading minus the resident memory after imports (and joining the process group). "
        "`rchar` = bytes the process read through system calls (/proc/self/io), headers included.",
        "",
        "| layout | N | rank | weight bytes | ratio | peak RSS increase | ratio | rchar | ratio | load s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for layout in ("mistral", "hf"):
        rows = [x for x in r["memory"] if x["layout"] == layout]
        single = rows[0]["per_rank"][0]
        for row in rows:
            n = row["ranks"]
            for rec in row["per_rank"]:
                ratios = [rec[k] / single[k] for k in ("weight_bytes", "peak_rss_increase", "rchar")]
                lines.append(
                    f"| {layout} | {n if row['mode'] == 'tp' else '1 (load_model)'} | {rec['rank']} | "
                    f"{rec['weight_bytes']:,} | {ratios[0]:.3f} | {rec['peak_rss_increase']:,} | {ratios[1]:.3f} | "
                    f"{rec['rchar']:,} | {ratios[2]:.3f} | {rec['load_s']:.2f} |"
                )
                if row["mode"] == "tp":
                    ok = all(x <= 1.1 / n for x in ratios[:2])
                    verdicts.append(ok)
    lines += [
        "",
        f"Target (weight bytes and peak RSS each <= 1.1 / N of the single process, every rank, both layouts): "
        f"**{'met' if all(verdicts) else 'NOT met'}**.",
        "",
        "## Decode step (batch 1, greedy)",
        "",
        f"Prompt {r['prompt']} tokens, then {r['steps']} steps; median ms per step of each run, median of "
        f"{r['repeats']} interleaved runs. N ranks = N processes driven from rank 0 by `TPDriver` "
        "(each step: one broadcast of the inputs, 2 x n_layers + 1 all-reduces, one all-gather).",
        "",
        "| configuration | threads per rank | cores used | ms per step | vs single, 1 thread | in collectives (rank 0, profiled) | each run's ms per step |",
        "|---|---|---|---|---|---|---|",
    ]
    base = next(d["step_ms"] for d in r["decode"] if d["mode"] == "single" and d["threads_per_rank"] == 1)
    for d in r["decode"]:
        each = ", ".join(f"{x['step_ms']:.0f}" for x in d["runs"])
        name = (
            "single process (load_model)"
            if d["mode"] == "single"
            else f"N = {d['ranks']} (load_model_tp + TPDriver)"
        )
        lines.append(
            f"| {name} | {d['threads_per_rank']} | {d['ranks'] * d['threads_per_rank']} | {d['step_ms']:.1f} | "
            f"{base / d['step_ms']:.2f}x | {d['comm_ms']:.1f} ms | {each} |"
        )
    lines += [
        "",
        "Batch-1 decode on a CPU reads every weight once per step, so splitting the weights over two "
        "processes on two cores halves the bytes each core reads, while adding the collectives' "
        "latency (gloo over loopback). Two torch threads in one process use the same two cores. "
        "On this shared machine (other jobs running: see the load average; a load of 6 on 2 cores "
        "means every process waits for a core most of the time) the figures are noisy: the runs "
        "column shows the spread, and the collectives' share includes time a rank waited for its "
        "peer to be scheduled. They say that the split works and does not slow decoding down here; "
        "they are not a measurement of tensor parallelism's speed-up on idle hardware.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        mode, path, out, prompt_len, steps = sys.argv[2:7]
        worker(mode, path, out, int(prompt_len), int(steps))
    else:
        main()
