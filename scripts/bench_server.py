"""Benchmark the OpenAI-compatible server: requests/s and tokens/s at several concurrencies.

    python scripts/bench_server.py                      # nemo-mid (random weights), CPU, 1/4/16
    python scripts/bench_server.py --preset nemo-small --concurrency 1 8 --max-tokens 64
    python scripts/bench_server.py --url http://127.0.0.1:8000   # an already running server

Without --url it starts a server in a subprocess (so the load generator does not compete with the
engine for Python's GIL) with --max-batch equal to the highest concurrency, waits for /health,
warms up, then for each concurrency c runs c client workers that each send --rounds streaming chat
requests back to back. Every request asks for exactly --max-tokens tokens (EOS is biased away with
logit_bias, so the random model cannot stop early) and uses its own seed.

Reported per level: requests/s, completion tokens/s, mean request latency, median time to first
token, and the mean time between tokens. Continuous batching should make tokens/s grow with c:
the target is tokens/s at c=16 >= 3x tokens/s at c=1. Results go to --out (.json and .md) with the
machine's description.

    python scripts/bench_server.py --prefill-gap --preset nemo-small    # chunked prefill

``--prefill-gap`` measures what chunked prefill is for: one stream decodes while 8 requests with
long prompts arrive together; reported are the p50 / p99 / max gap between that stream's tokens
while they are prefilled, for each ``--prefill-chunks`` value (a chunk as long as the context is
the schedule without chunking: each prompt prefilled whole between two decode steps). Results go
to benchmarks/server-prefill-cpu (.json and .md).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine_info import cpu_model  # scripts/ is on sys.path when a script runs

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]


# ---- the server subprocess --------------------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from nemo_ref.demo import embedded_model, notice
    from nemo_ref.server.app import create_app
    from nemo_ref.tokenizer import load_tokenizer

    model = embedded_model(args.preset, seed=0)
    app = create_app(
        model,
        load_tokenizer(),
        model_name=args.preset,
        max_batch=args.max_batch,
        max_model_len=args.max_model_len,
        notice=notice(args.preset, 0),
        prefill_chunk=args.prefill_chunk,
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, max_batch: int | None = None) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    cmd = [
        sys.executable,
        __file__,
        "--serve",
        "--preset",
        args.preset,
        "--port",
        str(port),
        "--max-batch",
        str(max_batch or max(args.concurrency)),
        "--max-model-len",
        str(args.max_model_len),
    ]
    if args.prefill_chunk is not None:
        cmd += ["--prefill-chunk", str(args.prefill_chunk)]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("the server did not become ready in 300 s")


# ---- the load generator -----------------------------------------------------------------------


async def one_request(client, model: str, seed: int, max_tokens: int) -> dict:
    body = {
        "model": model,
        "messages": PROMPT,
        "max_tokens": max_tokens,
        "seed": seed,
        "logit_bias": {"2": -100},  # no EOS: every request generates exactly max_tokens
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    first = None
    usage = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if first is None and any(c["delta"].get("content") for c in chunk["choices"]):
                first = time.perf_counter()
    end = time.perf_counter()
    tokens = usage["completion_tokens"]
    return {
        "latency_s": end - t0,
        "ttft_s": (first or end) - t0,
        "tokens": tokens,
        "inter_token_s": (end - (first or end)) / max(tokens - 1, 1),
    }


async def level(url: str, model: str, concurrency: int, rounds: int, max_tokens: int, seed0: int) -> dict:
    import httpx

    async with httpx.AsyncClient(
        base_url=url, timeout=600, limits=httpx.Limits(max_connections=64)
    ) as client:

        async def worker(w: int) -> list[dict]:
            return [
                await one_request(client, model, seed0 + w * rounds + i, max_tokens) for i in range(rounds)
            ]

        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(w) for w in range(concurrency))) for r in rs]
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()[0]
    tokens = sum(r["tokens"] for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "completion_tokens": tokens,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(results) / wall, 4),
        "tokens_per_s": round(tokens / wall, 2),
        "mean_latency_s": round(statistics.mean(r["latency_s"] for r in results), 3),
        "median_ttft_s": round(statistics.median(r["ttft_s"] for r in results), 3),
        "mean_inter_token_ms": round(1000 * statistics.mean(r["inter_token_s"] for r in results), 1),
        "loadavg_1min": [round(load_before, 2), round(load_after, 2)],  # others' work shows here
    }


# ---- chunked prefill: a running stream's inter-token gaps while long prompts arrive ---------------


async def prefill_gap_run(url: str, model: str, prompt_words: int, arrivals: int, stream_tokens: int) -> dict:
    import httpx

    async with httpx.AsyncClient(
        base_url=url, timeout=600, limits=httpx.Limits(max_connections=64)
    ) as client:
        stamps: list[float] = []
        started = asyncio.Event()

        async def stream() -> None:
            body = {
                "model": model,
                "messages": PROMPT,
                "max_tokens": stream_tokens,
                "seed": 1,
                "logit_bias": {"2": -100},
                "logprobs": True,  # one chunk per token, text or not
                "stream": True,
            }
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if line.startswith("data: {") and '"logprobs":{' in line.replace(" ", ""):
                        stamps.append(time.perf_counter())
                        if len(stamps) == 20:
                            started.set()

        async def long_prompt(i: int) -> float:
            text = f"{i} " + "lighthouse keeper storm " * (prompt_words // 3)
            body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 1}
            t0 = time.perf_counter()
            r = await client.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            return time.perf_counter() - t0

        task = asyncio.create_task(stream())
        await asyncio.wait_for(started.wait(), 300)
        t_arrive = time.perf_counter()
        latencies = await asyncio.gather(*(long_prompt(i) for i in range(arrivals)))
        t_done = time.perf_counter()
        await task
    before = [b - a for a, b in itertools.pairwise(stamps) if b < t_arrive]
    during = [b - a for a, b in itertools.pairwise(stamps) if t_arrive < b <= t_done + 1e-3]

    def q(xs: list[float], p: float) -> float:
        xs = sorted(xs)
        return round(1000 * xs[min(len(xs) - 1, int(p * len(xs)))], 1) if xs else float("nan")

    return {
        "gap_ms_before_arrivals_p50": q(before, 0.5),
        "gap_ms_p50": q(during, 0.5),
        "gap_ms_p99": q(during, 0.99),
        "gap_ms_max": q(during, 1.0),
        "stream_tokens_during": len(during),
        "arrivals_s": round(t_done - t_arrive, 2),
        "long_request_latency_s_mean": round(statistics.mean(latencies), 2),
    }


def prefill_gap(args: argparse.Namespace) -> int:
    import httpx

    from nemo_ref.tokenizer import load_tokenizer

    tok = load_tokenizer()
    words = args.prompt_words
    prompt_tokens = len(tok.encode("0 " + "lighthouse keeper storm " * (words // 3)))
    results = []
    for chunk in args.prefill_chunks:
        args.prefill_chunk = chunk
        proc, url = start_server(args, max_batch=args.arrivals + 1)
        try:
            model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
            asyncio.run(level(url, model, 2, 1, 4, seed0=10**6))  # warm-up
            for rep in range(args.repeat):
                r = asyncio.run(prefill_gap_run(url, model, words, args.arrivals, args.stream_tokens))
                r = {"prefill_chunk": chunk, "repeat": rep, "loadavg_1min": round(os.getloadavg()[0], 2), **r}
                print(json.dumps(r), file=sys.stderr)
                results.append(r)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "config": {
            "preset": args.preset,
            "prompt_tokens": prompt_tokens,
            "arrivals": args.arrivals,
            "stream_tokens": args.stream_tokens,
            "max_model_len": args.max_model_len,
        },
        "runs": results,
    }
    out = Path(args.out if args.out != "benchmarks/server-cpu" else "benchmarks/server-prefill-cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    m, cfg = report["machine"], report["config"]
    lines = [
        "# Chunked prefill on CPU: a running stream's inter-token gap while long prompts arrive",
        "",
        f"Model `{cfg['preset']}` with random weights, float32. One streaming request decodes "
        f"({cfg['stream_tokens']} tokens, EOS biased away); after its 20th token, {cfg['arrivals']} requests "
        f"with {cfg['prompt_tokens']}-token prompts (max_tokens 1) arrive together. Gaps are between "
        "consecutive token chunks of the running stream, from the arrivals until the last long request "
        f"answered. `--prefill-chunk {args.max_model_len}` (the context) is the schedule without chunking "
        "(each prompt prefilled whole between two decode steps, as before issue 15). Produced by "
        f"`python scripts/bench_server.py {' '.join(sys.argv[1:])}` on {report['date']}.",
        "",
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs (torch threads {m['torch_threads']}), "
        f"{m['platform']}, Python {m['python']}, torch {m['torch']}. No GPU. Shared with other work: "
        "the 1-minute load average is given per run.",
        "",
        "| prefill chunk | run | gap p50 ms (before arrivals) | gap p50 ms | gap p99 ms | gap max ms "
        "| stream tokens meanwhile | arrivals done in s | long-request latency s | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['prefill_chunk']} | {r['repeat']} | {r['gap_ms_before_arrivals_p50']} | {r['gap_ms_p50']} | "
            f"{r['gap_ms_p99']} | {r['gap_ms_max']} | {r['stream_tokens_during']} | {r['arrivals_s']} | "
            f"{r['long_request_latency_s_mean']} | {r['loadavg_1min']} |"
        )
    if args.note:
        lines += ["", args.note]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"-> {out}.md", file=sys.stderr)
    return 0


def machine() -> dict:
    import torch

    cpu = cpu_model()
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def write_report(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    m, cfg = report["machine"], report["config"]
    lines = [
        "# Server throughput on CPU (continuous batching)",
        "",
        f"Model: `{cfg['preset']}` with random weights (vocab 131072), float32, "
        f"{cfg['max_tokens']} completion tokens per request (EOS biased away), streaming chat requests, "
        f"server `--max-batch {cfg['max_batch']}`; each level runs c clients x {cfg['rounds']} requests; "
        f"median of {cfg['repeat']} sweep(s). Produced by `python scripts/bench_server.py "
        f"--preset {cfg['preset']} --repeat {cfg['repeat']}` on {report['date']}.",
        "",
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs (torch threads {m['torch_threads']}), "
        f"{m['platform']}, Python {m['python']}, torch {m['torch']}. No GPU.",
        "",
        "| concurrency | requests | tokens | wall s | requests/s | tokens/s | mean latency s "
        "| median TTFT s | mean ms/token | load avg before, after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["levels"]:
        lines.append(
            f"| {r['concurrency']} | {r['requests']} | {r['completion_tokens']} | {r['wall_s']} | "
            f"{r['requests_per_s']} | {r['tokens_per_s']} | {r['mean_latency_s']} | {r['median_ttft_s']} | "
            f"{r['mean_inter_token_ms']} | {r['loadavg_1min'][0]}, {r['loadavg_1min'][1]} |"
        )
    s = report["speedup"]
    lines += [
        "",
        f"tokens/s at concurrency {s['high']} / at concurrency {s['low']}: **{s['ratio']:.2f}x** "
        f"(target >= 3x: {'met' if s['target_met'] else 'NOT met'}).",
        "",
        "Notes: the CPUs may be shared with other work (the 1-minute load average, taken before and "
        "after each level, shows how much), so absolute figures are noisy; the ratio is the point. "
        f"At concurrency 1 each decode step reads every weight for one token (the {cfg['vocab']} x "
        f"{cfg['dim']} output matrix alone is {cfg['vocab'] * cfg['dim'] * 4 / 2**20:.0f} MiB in "
        "float32); batched rows share that read, and what grows with the rows is the arithmetic and "
        "the per-row sampling. The engine prefills each new request's prompt on its own while the "
        "running rows wait, which shows in the time to first token at high concurrency.",
        "",
    ]
    if report.get("note"):
        lines += [report["note"], ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="nemo-mid")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--rounds", type=int, default=2, help="requests per client worker and level")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeat", type=int, default=1, help="sweeps over the levels; the median run is reported")
    p.add_argument("--max-model-len", type=int, default=512)
    p.add_argument("--url", default=None, help="benchmark a running server instead of starting one")
    p.add_argument("--model", default=None, help="model name on --url (default: its /v1/models)")
    p.add_argument("--out", default="benchmarks/server-cpu", help="report path without extension")
    p.add_argument("--note", default="", help="a paragraph appended to the .md report")
    p.add_argument("--prefill-gap", action="store_true", help="the chunked-prefill benchmark (see above)")
    p.add_argument("--prefill-chunks", type=int, nargs="+", default=[4096, 512, 128])
    p.add_argument("--prompt-words", type=int, default=2400, help="--prefill-gap: words per long prompt")
    p.add_argument("--arrivals", type=int, default=8)
    p.add_argument("--stream-tokens", type=int, default=400)
    p.add_argument("--prefill-chunk", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--max-batch", type=int, default=16, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args)
        return 0
    if args.prefill_gap:
        return prefill_gap(args)

    import httpx

    from nemo_ref.config import ModelArgs

    proc = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        print(f"starting a {args.preset} server ...", file=sys.stderr)
        proc, url = start_server(args)
    try:
        model = args.model or httpx.get(url + "/v1/models").json()["data"][0]["id"]
        print("warming up ...", file=sys.stderr)
        asyncio.run(level(url, model, 2, 1, 4, seed0=10**6))
        runs: dict[int, list[dict]] = {c: [] for c in args.concurrency}
        for _ in range(args.repeat):  # whole sweeps, so that a burst of other work hits every level
            for c in args.concurrency:
                r = asyncio.run(level(url, model, c, args.rounds, args.max_tokens, seed0=1000 * c))
                print(json.dumps(r), file=sys.stderr)
                runs[c].append(r)
        # Per level, the run with the median tokens/s (the lower middle one for an even count).
        levels = [sorted(rs, key=lambda r: r["tokens_per_s"])[(len(rs) - 1) // 2] for rs in runs.values()]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    lo, hi = levels[0], levels[-1]
    ratio = hi["tokens_per_s"] / lo["tokens_per_s"]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "config": {
            "preset": args.preset,
            "dim": ModelArgs.preset(args.preset).dim,
            "vocab": ModelArgs.preset(args.preset).vocab_size,
            "max_tokens": args.max_tokens,
            "rounds": args.rounds,
            "repeat": args.repeat,
            "max_batch": max(args.concurrency),
            "max_model_len": args.max_model_len,
            "url": args.url,
        },
        "levels": levels,
        "note": args.note,
        "all_runs": runs,
        "speedup": {
            "low": lo["concurrency"],
            "high": hi["concurrency"],
            "ratio": round(ratio, 3),
            "target_met": ratio >= 3.0,
        },
    }
    write_report(Path(args.out), report)
    print(
        f"tokens/s c={hi['concurrency']} / c={lo['concurrency']}: {ratio:.2f}x -> {args.out}.md",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
